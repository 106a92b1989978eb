"""geoweave benchmark (``make bench``): end to end vs floor, label join, OSM index.

Builds a small-tile recipe over the real SF Bay sample (>= 10,000 tiles), prints the figures
described in ``benchmarks/README.md`` from this one run, and writes them to
``benchmarks/out/results.json``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Run as a script (``python benchmarks/run.py``): make the ``benchmarks`` folder importable.
sys.path.append(str(Path(__file__).resolve().parents[1]))

from benchmarks import figures
from geoweave.builders.plan import plan_tiles
from geoweave.builders.recipe import load_recipe
from geoweave.builders.shard import open_imagery

MIN_TILES = 10_000
MIN_RATIO, MIN_JOIN_SPEEDUP, MAX_OSM_RATIO = 0.6, 50.0, 5.0
Row = tuple[str, str, str, str]


def set_env() -> None:
    """Quiet, local, self-contained: no usage stats, cache and Ray files in known places."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["GEOWEAVE_CACHE"] = str(figures.OUT / "cache")
    os.environ["RAY_TMPDIR"] = "/tmp/gwbench"


def timed_phase(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one measurement; record the machine load around it (other processes skew it)."""
    print(f"== {name} ...", flush=True)
    load_before = os.getloadavg()[0]
    result = fn()
    result["load_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    print(json.dumps(result, indent=1), flush=True)
    return result


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def table_rows(r: dict[str, Any]) -> list[Row]:
    e2e, inproc, floor = r["end_to_end"], r["in_process"], r["floor"]
    join, osm = r["join"], r["osm_index"]
    ratio = r["ratio_e2e_floor"] = e2e["tiles_per_s"] / floor["tiles_per_s"]
    ratio_inproc = r["ratio_in_process_floor"] = inproc["tiles_per_s"] / floor["tiles_per_s"]
    return [
        ("end to end (Ray, 1 worker), tiles/s", f"{e2e['tiles_per_s']:.1f}", "", ""),
        ("  outside shard tasks (Ray, plan, manifest), s", f"{e2e['outside_shard_tasks_seconds']:.1f}", "", ""),
        ("end to end in-process (no Ray), tiles/s", f"{inproc['tiles_per_s']:.1f}", "", ""),
        ("floor (read+rgb8+jpeg+tar), tiles/s", f"{floor['tiles_per_s']:.1f}", "", ""),
        ("end to end / floor", f"{ratio:.2f}", f">= {MIN_RATIO}", verdict(ratio >= MIN_RATIO)),
        ("in-process / floor", f"{ratio_inproc:.2f}", "(info)", ""),
        ("join, ms/tile (ShardLabels + for_tile)", f"{join['ms_per_tile']:.3f}", "", ""),
        ("join, ms/tile (naive sjoin, whole OSM)", f"{join['naive_ms_per_tile']:.3f}", "", ""),
        ("join speed-up", f"{join['speedup']:.1f}x", f">= {MIN_JOIN_SPEEDUP:g}x", verdict(join["speedup"] >= MIN_JOIN_SPEEDUP)),
        ("OSM index build, s", f"{osm['index_s']:.3f}", "", ""),
        ("bare osmium pass (with areas), s", f"{osm['bare_osmium_s']:.3f}", "", ""),
        ("OSM index / osmium pass", f"{osm['ratio']:.2f}x", f"<= {MAX_OSM_RATIO:g}x", verdict(osm["ratio"] <= MAX_OSM_RATIO)),
    ]  # fmt: skip


def print_table(rows: list[Row]) -> None:
    header = ("figure", "measured", "target", "result")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def main() -> None:
    started = time.perf_counter()
    figures.OUT.mkdir(parents=True, exist_ok=True)
    set_env()
    recipe = load_recipe(figures.write_recipe())
    groups = figures.shard_groups(plan_tiles(recipe, [open_imagery(c) for c in recipe.imagery]))
    n_tiles = sum(len(t) for t in groups.values())
    assert n_tiles >= MIN_TILES, f"only {n_tiles} tiles planned; make the tiles smaller"
    results: dict[str, Any] = {"recipe": recipe.model_dump(mode="json"), "tiles": n_tiles}
    results["end_to_end"] = timed_phase("end to end", lambda: figures.end_to_end(recipe))
    results["in_process"] = timed_phase("in-process", lambda: figures.in_process(recipe))
    results["floor"] = timed_phase("floor", lambda: figures.floor(recipe, groups))
    results["join"] = timed_phase("join", lambda: figures.join(recipe, groups))
    results["osm_index"] = timed_phase("OSM index", lambda: figures.osm_index_build(recipe))
    for key in ("end_to_end", "in_process", "floor"):
        assert results[key]["tiles"] == n_tiles, f"{key} did not run every planned tile"
    rows = results["table"] = table_rows(results)
    results["total_seconds"] = time.perf_counter() - started
    results["cpus"] = os.cpu_count()
    (figures.OUT / "results.json").write_text(json.dumps(results, indent=1, default=str))

    print(f"\ngeoweave benchmark: {n_tiles} tiles in {len(groups)} shards, sf-bay sample")
    print(f"end to end: {results['end_to_end']['mode']}\n")
    print_table(rows)
    loads = [v for r in results.values() if isinstance(r, dict) for v in r.get("load_1min", [])]
    if max(loads) > (os.cpu_count() or 1):
        print(f"\nnote: load average up to {max(loads):.1f} on {os.cpu_count()} CPUs: other")
        print("processes competed for the CPUs, so these figures are noisy (Ray workers run at")
        print("nice 15 and lose the most).")
    print(f"\nbenchmark took {results['total_seconds']:.1f} s; {figures.OUT / 'results.json'}")


if __name__ == "__main__":
    main()
