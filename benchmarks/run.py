"""geoweave benchmark (``make bench``): pixel throughput vs the floor, per-tile overhead, join,
OSM index; every figure from this one run.

``python benchmarks/run.py`` builds (or reuses) a 24576 px seeded mosaic and times 128 and
256 px tiles against the floor with 1 and 2 workers, then the 8 px SF Bay build, the join and
the OSM index. ``--quick`` uses a 2048 px mosaic and a smaller 8 px build: a smoke test of the
harness, not figures to quote. Prints a markdown table and writes it to
``benchmarks/out/figures.md``, everything else to ``benchmarks/out/results.json``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Run as a script (``python benchmarks/run.py``): make the ``benchmarks`` folder importable.
sys.path.append(str(Path(__file__).resolve().parents[1]))

from benchmarks import figures, report
from benchmarks.builds import OUT, env
from benchmarks.make_mosaic import make_mosaic
from benchmarks.throughput import phase, size_figures
from geoweave.sources.rasters import streaming_block_cache

SIZES = (128, 256)
FULL = {"mosaic_px": 24576, "min_8px_tiles": 10_000, "naive_sample": 500}
QUICK = {"mosaic_px": 2048, "min_8px_tiles": 1, "naive_sample": 100}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="small mosaic and 8 px build: a smoke run")
    p.add_argument("--seed", type=int, default=0, help="mosaic seed (default 0)")
    p.add_argument("--mosaic-px", type=int, help="mosaic side in px (a multiple of 256)")
    return p.parse_args()


def figure(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """One printed, load-recorded measurement; a failure becomes a row, not a crash."""
    return figures.guarded(name, lambda: phase(name, fn))


def measure(params: dict[str, Any], seed: int, quick: bool) -> dict[str, Any]:
    """Every figure, each guarded so one broken figure leaves the others standing."""
    t0 = time.perf_counter()
    mosaic = make_mosaic(params["mosaic_px"], seed)
    made = {"size_px": mosaic.size_px, "seed": seed, "make_or_load_s": time.perf_counter() - t0}
    results: dict[str, Any] = {"mosaic": made}
    new_format: bool | None = None  # detected with the first size, reused for the next
    for size in SIZES:
        run_size = functools.partial(size_figures, mosaic, size, new_format)
        r = results[f"size_{size}"] = figures.guarded(f"{size} px", run_size)
        new_format = r.get("new_filter_format", new_format)
    recipe = figures.small_tile_recipe(quick)
    min_tiles, naive = params["min_8px_tiles"], params["naive_sample"]
    results["per_tile_8px"] = figure(
        "8 px, 1 worker", lambda: figures.per_tile_overhead(recipe, min_tiles)
    )
    results["join"] = figure("join", lambda: figures.join(recipe, naive))
    results["osm_index"] = figure("OSM index", lambda: figures.osm_index_build(recipe))
    return results


def table(results: dict[str, Any]) -> list[report.Row]:
    rows: list[report.Row] = []
    for size in SIZES:
        r = results[f"size_{size}"]
        rows += report.missing(f"{size} px", r) or report.size_rows(r)
    return rows + report.small_tile_rows(
        results["per_tile_8px"], results["join"], results["osm_index"]
    )


def load_note(results: dict[str, Any]) -> str:
    """A warning when other processes competed for the CPUs during a phase.

    The benchmark's own 2-worker builds load both CPUs, so only a load above the CPU count
    says that someone else was running too.
    """
    loads = [v for r in results.values() if isinstance(r, dict) for v in r.get("load_1min", [])]
    loads += [v for r in results.values() if isinstance(r, dict) for p in r.values()
              if isinstance(p, dict) for v in p.get("load_1min", [])]  # fmt: skip
    cpus = os.cpu_count() or 1
    if not loads or max(loads) <= cpus:
        return ""
    return (f"\nnote: 1-minute load average up to {max(loads):.1f} on {cpus} CPUs: other processes "
            "competed for the CPUs, so these figures are noisy (Ray workers run at nice 15 and "
            "lose the most; 2 workers need 2 idle CPUs).")  # fmt: skip


def main() -> None:
    args = parse_args()
    # The floor reads with the block cache that geoweave's build uses (GDAL_CACHEMAX 64 MB):
    # a smaller cache makes both faster, and the ratio is not about the cache.
    streaming_block_cache()
    started = time.perf_counter()
    OUT.mkdir(parents=True, exist_ok=True)
    os.environ.update(env())  # the join and OSM-index figures run in this process
    params = dict(QUICK if args.quick else FULL)
    if args.mosaic_px:
        params["mosaic_px"] = args.mosaic_px
    results = measure(params, args.seed, args.quick)
    rows = table(results)
    results.update(
        table=rows,
        quick=args.quick,
        cpus=os.cpu_count(),
        total_seconds=time.perf_counter() - started,
    )
    (OUT / "results.json").write_text(json.dumps(results, indent=1, default=str))
    mode = "QUICK (smoke run; not figures to quote)" if args.quick else "full"
    title = f"geoweave benchmark, {mode}: mosaic {params['mosaic_px']} px, seed {args.seed}"
    text = f"# {title}\n\n{report.markdown(rows)}\n{load_note(results)}\n"
    (OUT / "figures.md").write_text(text)
    print(
        f"\n{text}\nbenchmark took {results['total_seconds']:.1f} s; {OUT / 'figures.md'}, {OUT / 'results.json'}"
    )


if __name__ == "__main__":
    main()
