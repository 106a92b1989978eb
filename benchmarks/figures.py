"""The measurements of ``benchmarks/run.py``; each returns a dict of figures (seconds, rates).

All of them use one recipe (``write_recipe``) over the real SF Bay sample, so they time the
same tiles.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import geopandas as gpd
import osmium
import pyarrow.parquet as pq
import shapely
import webdataset as wds
import yaml

from geoweave.builders.build import build, cache_root, plan_table, prepare
from geoweave.builders.join import ShardLabels
from geoweave.builders.plan import Plan
from geoweave.builders.recipe import Recipe
from geoweave.builders.shard import encode_jpeg, open_imagery, open_label_sources, run_shard
from geoweave.manifests.manifest import PLAN, write_manifest
from geoweave.sources.grid import Tile
from geoweave.sources.osm import OsmIndex, build_osm_index

OUT = Path(__file__).resolve().parent / "out"
DATA = Path(__file__).resolve().parents[1].parent / "shared/data/sf-bay"
IMAGE = DATA / "sf_bay_landsat7_falsecolor_30m.tif"
PBF = DATA / "sf_bay_osm_overpass_20171020.osm.pbf"
NAIVE_SAMPLE = 500  # tiles timed with the naive sjoin
REPEATS = 3  # OSM index build and bare osmium pass: best of this many
MANIFEST_COUNTS = """
SELECT (SELECT count(*) FROM samples), (SELECT count(*) FROM samples WHERE status = 'kept'),
       (SELECT sum(seconds) FROM shards WHERE status = 'complete')
"""

Groups = dict[int, list[Tile]]


def write_recipe() -> Path:
    """8 px tiles at 24 m (about the source's ground resolution) and 48 m: ~10,900 tiles."""
    recipe = {
        "name": "bench",
        "imagery": [{"name": "landsat7", "path": str(IMAGE), "scale": "none"}],
        "tiles": {"size_px": 8, "gsd_m": [24, 48]},
        "labels": {"osm": [str(PBF)], "min_pixels": 2},
        "output": {"dir": str(OUT / "e2e"), "samples_per_shard": 64},
        "execution": {"num_cpus": 1},
    }
    path = OUT / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def shard_groups(plan: Plan) -> Groups:
    """The plan's tiles by shard, in plan order (what each shard task gets)."""
    groups: Groups = defaultdict(list)
    for tile in plan.tiles:
        groups[tile.shard].append(tile)
    return dict(groups)


def osm_index(recipe: Recipe) -> OsmIndex:
    """The recipe's OSM index in the benchmark cache (built on first use, then reused)."""
    return build_osm_index(PBF, cache_root(recipe) / "osm", recipe.labels.tag_keys)


def end_to_end(recipe: Recipe) -> dict[str, Any]:
    """A real ``build()`` on local Ray with one CPU: one worker runs every shard."""
    osm_index(recipe)  # the one-off index build is not timed
    shutil.rmtree(recipe.output.dir, ignore_errors=True)
    t0 = time.perf_counter()
    summary = build(recipe, progress=False)
    seconds = time.perf_counter() - t0
    with duckdb.connect(summary["manifest"], read_only=True) as con:
        row = con.execute(MANIFEST_COUNTS).fetchone()
    assert row is not None and summary["shards_failed"] == 0, "see benchmarks/out/e2e"
    tiles, kept, in_shards = row
    return {
        "mode": "build(recipe) on local Ray, execution.num_cpus=1 (one worker)",
        "tiles": tiles,
        "kept": kept,
        "shards": summary["shards_planned"],
        "seconds": seconds,
        "tiles_per_s": tiles / seconds,
        "shard_task_seconds": in_shards,
        "outside_shard_tasks_seconds": seconds - in_shards,
    }


def in_process(recipe: Recipe) -> dict[str, Any]:
    """The same build without Ray: prepare, ``run_shard`` per shard, ``write_manifest``."""
    out = OUT / "inproc"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    ctx, plan, _ = prepare(recipe, out)
    out.mkdir(parents=True)
    pq.write_table(plan_table(plan, recipe), out / PLAN)
    kept = sum(run_shard(ctx, s, tiles)["kept"] for s, tiles in shard_groups(plan).items())
    write_manifest(out, recipe.name)
    seconds = time.perf_counter() - t0
    n = len(plan.tiles)
    return {"tiles": n, "kept": kept, "seconds": seconds, "tiles_per_s": n / seconds}


def floor(recipe: Recipe, groups: Groups) -> dict[str, Any]:
    """Read + to_rgb8 + JPEG + tar for every tile, in-process, one tar per shard."""
    src = open_imagery(recipe.imagery[0])
    quality = recipe.output.jpeg_quality
    folder = OUT / "floor"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    n = 0
    t0 = time.perf_counter()
    for shard, tiles in groups.items():
        with wds.TarWriter(str(folder / f"floor-{shard:06d}.tar")) as tar:
            for tile in tiles:
                rgb = src.to_rgb8(src.read_tile(tile))
                tar.write({"__key__": tile.key, "jpg": encode_jpeg(rgb, quality)})
                n += 1
    seconds = time.perf_counter() - t0
    return {"tiles": n, "seconds": seconds, "tiles_per_s": n / seconds}


def whole_osm_table(index: OsmIndex, crs: str) -> gpd.GeoDataFrame:
    """Every feature of the index once, in the grid CRS, with its spatial index built."""
    gdf = gpd.read_parquet(index.root / "cells", columns=["id", "tags", "geometry"])
    gdf = gdf.drop_duplicates("id").reset_index(drop=True).to_crs(crs)
    gdf.sindex  # noqa: B018  (built here, outside the timing; geopandas keeps it)
    return gdf


def join(recipe: Recipe, groups: Groups) -> dict[str, Any]:
    """ShardLabels per shard + for_tile per tile vs a geopandas sjoin per tile on all of OSM."""
    index = osm_index(recipe)
    sources = open_label_sources((str(index.root),), recipe.labels)
    lab = recipe.labels
    found: dict[str, set[str]] = {}
    t0 = time.perf_counter()
    for tiles in groups.values():
        shard_labels = ShardLabels(sources, tiles)
        for tile in tiles:
            elements = shard_labels.for_tile(tile, lab.min_pixels, lab.keep_points)
            found[tile.key] = {e["id"] for e in elements}
    fast_s = time.perf_counter() - t0
    all_tiles = [t for tiles in groups.values() for t in tiles]
    sample = all_tiles[:: max(1, len(all_tiles) // NAIVE_SAMPLE)][:NAIVE_SAMPLE]
    table = whole_osm_table(index, sample[0].crs)
    missed = 0
    t0 = time.perf_counter()
    for tile in sample:
        left = gpd.GeoDataFrame({"key": [tile.key]}, geometry=[shapely.box(*tile.bounds)])
        hits = gpd.sjoin(left.set_crs(tile.crs), table, predicate="intersects")
        missed += not found[tile.key] <= set(hits["id"])
    naive_s = time.perf_counter() - t0
    assert missed == 0, f"{missed} tiles: the join found elements the naive sjoin did not"
    fast_ms, naive_ms = fast_s / len(all_tiles) * 1e3, naive_s / len(sample) * 1e3
    return {
        "tiles": len(all_tiles),
        "ms_per_tile": fast_ms,
        "naive_tiles": len(sample),
        "naive_ms_per_tile": naive_ms,
        "naive_table_features": len(table),
        "speedup": naive_ms / fast_ms,
    }


def best_of(fn: Callable[[], object], repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def osm_index_build(recipe: Recipe) -> dict[str, Any]:
    """build_osm_index into a fresh cache dir vs one bare osmium pass (with areas)."""

    def index_once() -> None:
        with tempfile.TemporaryDirectory(dir=OUT) as tmp:
            build_osm_index(PBF, tmp, recipe.labels.tag_keys)

    def bare_pass() -> None:
        for _ in osmium.FileProcessor(str(PBF)).with_areas():
            pass

    index_s, bare_s = best_of(index_once), best_of(bare_pass)
    return {
        "input_bytes": PBF.stat().st_size,
        "index_s": index_s,
        "bare_osmium_s": bare_s,
        "ratio": index_s / bare_s,
        "best_of": REPEATS,
    }
