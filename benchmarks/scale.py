"""Scale figures (issue 11): plan time and memory at 1M and 10M tiles (and 10M with splits),
the driver's and a worker's peak memory on builds at 1x to 300x the tiles, and a build on 2
Ray nodes against 1.

``python benchmarks/scale.py`` (``--quick`` for a smoke run). Every figure comes from
``build-dataset`` run as a subprocess: peak RSS is the process's own ``ru_maxrss`` (the
driver's; Ray's processes are not counted in it), a worker's is the largest ``max_rss_mb`` the
shards table records. Prints a markdown table and writes ``benchmarks/out/scale.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import duckdb

sys.path.append(str(Path(__file__).resolve().parents[1]))

from benchmarks.builds import OUT, env, relaxed_filters, write_recipe

SF = Path(__file__).resolve().parents[2] / "shared/data/sf-bay"
LANDSAT = SF / "sf_bay_landsat7_falsecolor_30m.tif"
PBF = SF / "sf_bay_osm_overpass_20171020.osm.pbf"
MEASURED = (
    "import resource, sys\n"
    "from geoweave.builders.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "print('maxrss_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def recipe(
    gsd: float, size: int, per_shard: int, osm: bool, splits: bool = False
) -> dict[str, Any]:
    r: dict[str, Any] = {
        "name": "scale",
        "imagery": [{"name": "l7", "path": str(LANDSAT), "bands": [1, 2, 3], "scale": "none"}],
        "tiles": {"size_px": size, "gsd_m": [gsd]},
        "filters": relaxed_filters(True),
        "output": {"samples_per_shard": per_shard},
    }
    if osm:
        r["labels"] = {"osm": [str(PBF)]}
    if splits:
        r["splits"] = {"enabled": True}
    return r


def measured(*args: str, extra_env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """(seconds, peak RSS in MB, stdout) of ``build-dataset ARGS`` in a fresh interpreter."""
    t = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-c", MEASURED, *args], capture_output=True, text=True, check=False,
        env={**env(), **(extra_env or {})},
    )  # fmt: skip
    seconds = time.perf_counter() - t
    if res.returncode != 0:
        raise RuntimeError(f"build-dataset {' '.join(args)} failed:\n{res.stderr[-3000:]}")
    rss = int(re.findall(r"maxrss_kb (\d+)", res.stderr)[-1]) // 1024
    return seconds, rss, res.stdout


def plan_figures(gsd: float, name: str) -> dict[str, Any]:
    """``build-dataset plan`` at ``gsd``; a name ending in ``+splits`` assigns splits too."""
    r = recipe(gsd, 8, 1000, osm=False, splits=name.endswith("+splits"))
    path = write_recipe(r, OUT / "scale" / f"plan-{name}.yaml")
    seconds, rss, stdout = measured("plan", str(path))
    tiles = int(re.search(r"^(\d+) tiles in", stdout, re.M)[1])  # type: ignore[index]
    return {"tiles": tiles, "seconds": round(seconds, 1), "peak_rss_mb": rss,
            "s_per_million": round(seconds / tiles * 1e6, 2)}  # fmt: skip


def build_figures(gsd: float, name: str, *cli_args: str, **kw: Any) -> dict[str, Any]:
    out = OUT / "scale" / f"build-{name}"
    with contextlib.suppress(FileNotFoundError):
        import shutil

        shutil.rmtree(out)
    path = write_recipe(recipe(gsd, 8, 500, osm=True), OUT / "scale" / f"build-{name}.yaml")
    seconds, rss, _ = measured("run", str(path), "-o", str(out), "--no-progress", *cli_args, **kw)
    con = duckdb.connect(str(out / "manifest.duckdb"), read_only=True)
    tiles, shards, worker_mb, nodes = con.execute(
        "SELECT sum(tiles), count(*), max(max_rss_mb), count(DISTINCT split_part(worker, ':', 1)) "
        "FROM shards WHERE status = 'complete'"
    ).fetchone()  # type: ignore[misc]
    inside = con.execute("SELECT sum(seconds) FROM shards").fetchone()[0]  # type: ignore[index]
    con.close()
    return {"tiles": int(tiles), "shards": int(shards), "seconds": round(seconds, 1),
            "tiles_per_s": round(tiles / seconds, 1), "driver_peak_rss_mb": rss,
            "worker_peak_rss_mb": worker_mb, "nodes": int(nodes),
            "shard_seconds": round(float(inside), 1)}  # fmt: skip


def two_nodes_vs_one(gsd: float) -> dict[str, Any]:
    """The same build on a 1-node and a 2-node Ray cluster (1 CPU each, one loopback IP per
    node), started by ``tests.ray_cluster`` and ended by PID."""
    import pytest

    from tests.ray_cluster import Cluster

    os.environ.setdefault("RAY_TMPDIR", "/tmp/gwbench")
    out: dict[str, Any] = {}
    for workers in (0, 1):
        with pytest.MonkeyPatch.context() as mp:
            cluster = Cluster(mp, workers=workers)
            try:
                keys = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "GEOWEAVE_RAY_NODE_IP")
                extra = {k: os.environ[k] for k in keys}
                name = f"{workers + 1}node"
                out[name] = build_figures(gsd, name, "--ray-address", cluster.address,
                                          extra_env=extra)  # fmt: skip
            finally:
                cluster.close()
    out["speedup"] = round(out["2node"]["tiles_per_s"] / out["1node"]["tiles_per_s"], 2)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    quick = p.parse_args().quick
    # the SF Landsat footprint at 8 px tiles: 0.7 m -> about 10M tiles, 2.2 m -> about 1M
    plan_gsd = {"1M": 2.2, "10M": 0.7, "10M+splits": 0.7}
    if quick:
        plan_gsd = {"1M": 10.0, "10M": 3.2, "10M+splits": 3.2}
    build_gsd = {"1x": 30.0, "10x": 9.5, "30x": 5.5, "100x": 3.0, "300x": 1.73}
    if quick:
        build_gsd = {"1x": 60.0, "10x": 30.0}
    results: dict[str, Any] = {"plan": {}, "build": {}}
    for name, gsd in plan_gsd.items():
        results["plan"][name] = plan_figures(gsd, name)
        print(name, results["plan"][name], flush=True)
    for name, gsd in build_gsd.items():  # geoweave's DuckDB cap (manifests/duck.py)
        results["build"][name] = build_figures(gsd, name, "--num-cpus", "2")
        print(name, results["build"][name], flush=True)
    results["nodes"] = two_nodes_vs_one(build_gsd["1x"])
    print(results["nodes"], flush=True)
    (OUT / "scale.json").write_text(json.dumps(results, indent=2))
    print(table(results))


def table(r: dict[str, Any]) -> str:
    rows = ["| figure | value |", "|---|---|"]
    for name, f in r["plan"].items():
        splits = " with splits" if name.endswith("+splits") else ""
        rows.append(f"| plan{splits}, {f['tiles']:,} tiles | {f['seconds']} s ({f['s_per_million']} s "
                    f"per million), peak RSS {f['peak_rss_mb']} MB |")  # fmt: skip
    for name, f in r["build"].items():
        rows.append(f"| build {name}: {f['tiles']:,} tiles, {f['shards']} shards | "
                    f"{f['tiles_per_s']} tiles/s; driver {f['driver_peak_rss_mb']} MB, "
                    f"worker {f['worker_peak_rss_mb']} MB |")  # fmt: skip
    n = r["nodes"]
    rows.append(f"| 2 nodes vs 1 ({n['1node']['tiles']:,} tiles) | {n['2node']['tiles_per_s']} vs "
                f"{n['1node']['tiles_per_s']} tiles/s: {n['speedup']}x |")  # fmt: skip
    return "\n".join(rows)


if __name__ == "__main__":
    main()
