"""Where a tile's time goes: cProfile of in-process ``run_shard`` vs the floor, same tiles.

Run after (or without) ``make bench``: ``.venv/bin/python benchmarks/profile_shards.py [N]``
profiles every N-th shard (default 8) of the benchmark recipe, prints per-tile milliseconds by
stage for both paths and writes ``benchmarks/out/profile_{e2e,floor}.prof`` (open them with
``python -m pstats`` or snakeviz).
"""

from __future__ import annotations

import cProfile
import os
import pstats
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import webdataset as wds

from geoweave.builders.build import prepare
from geoweave.builders.recipe import load_recipe
from geoweave.builders.shard import BuildContext, encode_jpeg, open_imagery, run_shard
from geoweave.sources.grid import Tile

OUT = Path(__file__).resolve().parent / "out"

# (label, file suffix, function names separated by "|"): their cumulative time, per tile.
# Indented rows are part of the row above. cProfile inflates many small Python calls (the
# rasterio Env rows most), so time the suggested fixes without it before trusting a row.
STAGES = [
    ("read_tile (window read + 2 reprojects)", "sources/imagery.py", "read_tile"),
    ("  transform_bbox (Transformer.from_crs)", "sources/grid.py", "transform_bbox"),
    ("  rasterio reproject", "rasterio/warp.py", "reproject"),
    ("  rasterio Env enter/exit", "rasterio/env.py", "__enter__|__exit__"),
    ("to_rgb8", "sources/imagery.py", "to_rgb8"),
    ("ShardLabels (per shard)", "builders/join.py", "__init__"),
    ("for_tile (join)", "builders/join.py", "for_tile"),
    ("apply_filters", "qa/filters.py", "apply_filters"),
    ("captions", "captioning/templates.py", "caption"),
    ("QA", "captioning/qa.py", "questions"),
    ("encode_jpeg", "builders/shard.py", "encode_jpeg"),
    ("ShardWriter.write (rows + tar)", "builders/writers.py", "write"),
    ("  Sample.metadata", "builders/sample.py", "metadata"),
    ("    Tile.bbox_lonlat", "sources/grid.py", "bbox_lonlat"),
    ("ShardWriter.finish (Parquet)", "builders/writers.py", "finish"),
]


def profiled(fn: Callable[[], None], path: Path) -> tuple[float, pstats.Stats]:
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.runcall(fn)
    seconds = time.perf_counter() - t0
    prof.dump_stats(path)
    return seconds, pstats.Stats(str(path))


def cumulative(stats: pstats.Stats, suffix: str, names: str) -> float:
    table = stats.stats  # type: ignore[attr-defined]
    wanted = names.split("|")
    return sum(v[3] for (f, _, n), v in table.items() if n in wanted and f.endswith(suffix))


def floor(ctx: BuildContext, groups: dict[int, list[Tile]]) -> None:
    src = open_imagery(ctx.recipe.imagery[0])
    for shard, tiles in groups.items():
        with wds.TarWriter(str(ctx.out_dir / f"floor-{shard:06d}.tar")) as tar:
            for tile in tiles:
                rgb = src.to_rgb8(src.read_tile(tile))
                tar.write({"__key__": tile.key, "jpg": encode_jpeg(rgb, 90)})


def main() -> None:
    every = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    os.environ["GEOWEAVE_CACHE"] = str(OUT / "cache")
    recipe_path = OUT / "recipe.yaml"
    if not recipe_path.exists():
        sys.exit("run benchmarks/run.py first (it writes benchmarks/out/recipe.yaml)")
    out_dir = OUT / "profile"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    ctx, plan, _ = prepare(load_recipe(recipe_path), out_dir)
    groups = {s: plan.shard_tiles(s) for s in range(0, plan.num_shards, every)}
    n = sum(len(t) for t in groups.values())
    run_shard(ctx, 0, groups[0])  # warm-up: open sources, load label partitions

    def e2e() -> None:
        for shard, tiles in groups.items():
            run_shard(ctx, shard, tiles)

    results = {
        "e2e": profiled(e2e, OUT / "profile_e2e.prof"),
        "floor": profiled(lambda: floor(ctx, groups), OUT / "profile_floor.prof"),
    }
    print(f"{n} tiles in {len(groups)} shards (every {every}th), in-process, under cProfile\n")
    print(f"{'ms per tile':44s} {'run_shard':>10s} {'floor':>10s}")
    for label, suffix, name in STAGES:
        cells = [cumulative(stats, suffix, name) / n * 1e3 for _, stats in results.values()]
        print(f"{label:44s} {cells[0]:10.3f} {cells[1]:10.3f}")
    totals = [seconds / n * 1e3 for seconds, _ in results.values()]
    print(f"{'total (wall, with profiler overhead)':44s} {totals[0]:10.3f} {totals[1]:10.3f}")
    for key, (_, stats) in results.items():
        print(f"\n== {key}: top 15 by own time")
        stats.sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
