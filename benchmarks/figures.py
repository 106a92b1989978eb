"""The small-tile figures on the real SF Bay sample: 8 px per-tile overhead, join, OSM index.

The 8 px build goes through the CLI like every other build. The join and OSM-index figures
time geoweave internals (``ShardLabels``, ``build_osm_index``) that have no public surface;
they import them lazily, so an internal that moved makes that one figure report
``figure unavailable: <ImportError>`` instead of stopping the benchmark.
"""

from __future__ import annotations

import tempfile
import time
import traceback
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.builds import OUT, plan, run_build, write_recipe

DATA = Path(__file__).resolve().parents[2] / "shared/data/sf-bay"
IMAGE = DATA / "sf_bay_landsat7_falsecolor_30m.tif"
PBF = DATA / "sf_bay_osm_overpass_20171020.osm.pbf"
RECIPE = OUT / "recipe.yaml"  # also read by profile_shards.py
REPEATS = 3  # OSM index build and bare osmium pass: best of this many


def guarded(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one figure; a moved internal or a failure becomes a line, not a crash."""
    try:
        return fn()
    except ImportError as e:
        print(f"{name}: figure unavailable: {e!r}", flush=True)
        return {"unavailable": repr(e)}
    except Exception as e:  # one broken figure must not hide the others
        traceback.print_exc()
        print(f"{name}: figure failed: {e!r}", flush=True)
        return {"failed": repr(e)}


def small_tile_recipe(quick: bool) -> Path:
    """8 px tiles at 24 m and 48 m (48 m only with --quick): per-tile costs dominate."""
    recipe = {
        "name": "bench",
        "imagery": [{"name": "landsat7", "path": str(IMAGE), "scale": "none"}],
        "tiles": {"size_px": 8, "gsd_m": [48] if quick else [24, 48]},
        "labels": {"osm": [str(PBF)], "min_pixels": 2},
        "output": {"dir": str(OUT / "e2e")},  # the default samples_per_shard
        "execution": {"num_cpus": 1},
    }
    return write_recipe(recipe, RECIPE)


def per_tile_overhead(recipe: Path, min_tiles: int) -> dict[str, Any]:
    """One-worker CLI build of the 8 px recipe; the OSM index is built by ``plan`` first."""
    tiles, _ = plan(recipe)
    assert tiles >= min_tiles, f"only {tiles} tiles planned; make the tiles smaller"
    result = run_build(recipe, OUT / "e2e", workers=1)
    result["ms_per_tile_inside"] = result["shard_s_sum"] / result["tiles"] * 1e3
    return result


def shard_groups(recipe_path: Path) -> tuple[Any, dict[int, list[Any]]]:
    """The recipe and its planned tiles by shard (geoweave internals)."""
    from geoweave.builders.plan import plan_tiles
    from geoweave.builders.recipe_files import load_recipe
    from geoweave.builders.worker_state import open_imagery

    recipe = load_recipe(recipe_path)
    groups: dict[int, list[Any]] = defaultdict(list)
    for tile in plan_tiles(recipe, [open_imagery(c) for c in recipe.imagery]).iter_tiles():
        groups[tile.shard].append(tile)
    return recipe, dict(groups)


def osm_index(recipe: Any) -> Any:
    from geoweave.builders.prepare import cache_root
    from geoweave.sources.osm import build_osm_index

    return build_osm_index(PBF, cache_root(recipe) / "osm", recipe.labels.tag_keys)


def naive_ms(index: Any, sample: list[Any], found: dict[str, set[str]]) -> tuple[float, int]:
    """A geopandas sjoin of each sampled tile against the whole OSM table (sindex prebuilt)."""
    import geopandas as gpd
    import shapely

    table = gpd.read_parquet(index.root / "cells", columns=["id", "tags", "geometry"])
    table = table.drop_duplicates("id").reset_index(drop=True).to_crs(sample[0].crs)
    table.sindex  # noqa: B018  (built here, outside the timing; geopandas keeps it)
    missed = 0
    t0 = time.perf_counter()
    for tile in sample:
        left = gpd.GeoDataFrame({"key": [tile.key]}, geometry=[shapely.box(*tile.bounds)])
        hits = gpd.sjoin(left.set_crs(tile.crs), table, predicate="intersects")
        missed += not found[tile.key] <= set(hits["id"])
    assert missed == 0, f"{missed} tiles: the join found elements the naive sjoin did not"
    return (time.perf_counter() - t0) / len(sample) * 1e3, len(table)


def join(recipe_path: Path, naive_sample: int) -> dict[str, Any]:
    """ShardLabels + for_tiles per shard (as the pipeline joins) vs a naive per-tile sjoin on
    all of OSM."""
    from geoweave.builders.join import ShardLabels
    from geoweave.builders.worker_state import open_label_sources

    recipe, groups = shard_groups(recipe_path)
    index, lab = osm_index(recipe), recipe.labels
    sources = open_label_sources((str(index.root),), lab)
    found: dict[str, set[str]] = {}
    t0 = time.perf_counter()
    for tiles in groups.values():
        shard_labels = ShardLabels(sources, tiles)
        visible = shard_labels.for_tiles(tiles, lab.min_pixels, lab.keep_points)
        for tile, elements in zip(tiles, visible, strict=True):
            found[tile.key] = {e["id"] for e in elements}
    all_tiles = [t for tiles in groups.values() for t in tiles]
    fast_ms = (time.perf_counter() - t0) / len(all_tiles) * 1e3
    sample = all_tiles[:: max(1, len(all_tiles) // naive_sample)][:naive_sample]
    slow_ms, features = naive_ms(index, sample, found)
    return {"tiles": len(all_tiles), "ms_per_tile": fast_ms, "naive_tiles": len(sample),
            "naive_ms_per_tile": slow_ms, "naive_table_features": features,
            "speedup": slow_ms / fast_ms}  # fmt: skip


def best_of(fn: Callable[[], object], repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def osm_index_build(recipe_path: Path) -> dict[str, Any]:
    """build_osm_index into a fresh cache folder vs one bare osmium pass (with areas)."""
    import osmium

    from geoweave.builders.recipe_files import load_recipe
    from geoweave.sources.osm import build_osm_index

    tag_keys = load_recipe(recipe_path).labels.tag_keys

    def index_once() -> None:
        with tempfile.TemporaryDirectory(dir=OUT) as tmp:
            build_osm_index(PBF, tmp, tag_keys)

    def bare_pass() -> None:
        for _ in osmium.FileProcessor(str(PBF)).with_areas():
            pass

    index_s, bare_s = best_of(index_once), best_of(bare_pass)
    return {"input_bytes": PBF.stat().st_size, "index_s": index_s, "bare_osmium_s": bare_s,
            "ratio": index_s / bare_s, "best_of": REPEATS}  # fmt: skip
