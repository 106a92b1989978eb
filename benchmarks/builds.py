"""geoweave builds driven through its public surface only: the ``build-dataset`` CLI, the output
folder, ``manifest.duckdb`` and the ``_runs/*.json`` records.

The package's internals are being refactored, so nothing here imports geoweave: a build is a
subprocess timed from outside (wall time includes interpreter start, Ray start, plan, shard
tasks and the manifest), and what happened inside it is read back from the manifest.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import duckdb
import yaml

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
CLI = ROOT / ".venv" / "bin" / "build-dataset"
BAD_INPUT = 2  # build-dataset's exit code for a recipe it rejects
TIMING_KEYS = ("prepare_s", "ray_start_s", "shards_s", "ray_stop_s", "passes_s", "manifest_s")
REJECTS_SQL = "SELECT coalesce(reject_reason, status), count(*), {error} FROM samples GROUP BY 1"
SHARDS_SQL = """
SELECT count(*), sum(tiles), sum(kept), sum(seconds), count(DISTINCT worker)
FROM shards WHERE status = 'complete'
"""


def env() -> dict[str, str]:
    """Quiet, local, self-contained: no usage stats, cache and Ray files in known places."""
    return {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "GEOWEAVE_CACHE": str(OUT / "cache"),
            "RAY_TMPDIR": "/tmp/gwbench"}  # fmt: skip


def relaxed_filters(new_format: bool) -> dict[str, Any]:
    """Filters that keep every tile. The one place that knows both recipe formats.

    After the refactor filters are versioned names merged over the defaults (``false`` would
    disable one); before it they are three flat fields.
    """
    if new_format:
        return {"nodata_v1": {"max_fraction": 1.0}, "low_variance_v1": {"min_std": 0},
                "min_labels_v1": {"min_labels": 0}, "cloud_v1": {"max_fraction": 1.0},
                "saturation_v1": {"max_fraction": 1.0}}  # fmt: skip
    return {"max_nodata_fraction": 1.0, "min_std": 0, "min_labels": 0}


def write_recipe(recipe: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLI), *args], env=env(), capture_output=True, text=True, check=False)


def plan(recipe: Path) -> tuple[int, int]:
    """(tiles, shards) from ``build-dataset plan``; it also builds label indexes (untimed)."""
    done = cli("plan", str(recipe))
    if done.returncode != 0:
        raise RuntimeError(f"build-dataset plan {recipe} failed:\n{done.stderr[-2000:]}")
    words = done.stdout.strip().splitlines()[-1].split()  # "N tiles in S shards of P"
    return int(words[0]), int(words[3])


def detect_new_format(recipe_for: Any, path: Path) -> bool:
    """Whether the CLI takes the refactored filter format: plan with it, exit 2 means no."""
    return cli("plan", str(write_recipe(recipe_for(True), path))).returncode != BAD_INPUT


def run_build(recipe: Path, out: Path, workers: int, early_start: bool = True) -> dict[str, Any]:
    """``build-dataset run`` from scratch with ``workers`` local Ray CPUs, timed and read back.

    ``early_start=False`` turns off the early worker that runs shards while Ray starts: its
    shards overlap the first Ray shards, so on 2 CPUs both run slower; without it the shard
    tasks' own rate is measured alone."""
    shutil.rmtree(out, ignore_errors=True)  # a rerun would resume and do nothing
    args = ["run", str(recipe), "-o", str(out), "--no-progress",
            "--set", f"execution.num_cpus={workers}",
            "--set", f"execution.early_start={str(early_start).lower()}"]  # fmt: skip
    launched, t0 = time.time(), time.perf_counter()
    done = cli(*args)
    wall = time.perf_counter() - t0
    ended = launched + wall
    if done.returncode != 0:
        raise RuntimeError(
            f"build-dataset {' '.join(args)}: exit {done.returncode}\n{done.stderr[-3000:]}"
        )
    result = {"workers": workers, "wall_s": wall, **manifest_figures(out, workers)}
    result["tiles_per_s"] = result["tiles"] / wall
    result["outside_s"] = wall - result["shard_s_sum"] / workers
    result["outside_share"] = result["outside_s"] / wall
    result["timings"] = run_timings(out, launched, ended, result, workers)
    return result


def manifest_figures(out: Path, workers: int) -> dict[str, Any]:
    """Shard counts and the time spent inside shard tasks, from the manifest."""
    with duckdb.connect(str(out / "manifest.duckdb"), read_only=True) as con:
        row = con.execute(SHARDS_SQL).fetchone()
        rejects = by_reason(con)
    assert row is not None and row[0], f"no complete shards in {out}"
    shards, tiles, kept, shard_s, distinct_workers = row
    return {"shards": shards, "tiles": int(tiles), "kept": int(kept), "shard_s_sum": shard_s,
            "inside_tiles_per_s": tiles / shard_s, "distinct_workers": distinct_workers, "by_reason": rejects}  # fmt: skip


def by_reason(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """Tiles per status / reject reason, with one error message (newer manifests have one)."""
    try:
        rows = con.execute(REJECTS_SQL.format(error="any_value(error)")).fetchall()
    except duckdb.BinderException:  # no ``error`` column
        rows = con.execute(REJECTS_SQL.format(error="NULL")).fetchall()
    return {r[0]: {"tiles": r[1], "an_error": r[2]} for r in rows}


def run_record(out: Path) -> dict[str, Any]:
    records = sorted((out / "_runs").glob("*.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(records[-1].read_text()) if records else {}


def run_timings(
    out: Path, launched: float, ended: float, res: dict[str, Any], workers: int
) -> dict[str, Any]:
    """Where the wall time went: the run record's ``timings`` when it has them, else estimates.

    Without ``timings`` (before the refactor) the record's ``started``/``finished`` split the
    wall time into CLI start (imports, recipe), build (prepare, Ray start, shards) and tail
    (run record, manifest, exit); per-task overhead is then an upper bound that includes
    prepare and Ray start.
    """
    record = run_record(out)
    given = record.get("timings") or {}
    timings: dict[str, Any] = {k: given[k] for k in TIMING_KEYS if k in given}
    timings["source"] = "run record" if timings else "estimated from started/finished"
    in_shards = res["shard_s_sum"] / workers
    if "started" in record and "finished" in record:
        timings["cli_start_s"] = record["started"] - launched
        timings["tail_s"] = ended - record["finished"]
        build_s = record["finished"] - record["started"]
    else:
        build_s = ended - launched
    span = given.get("shards_s", build_s)
    timings["per_task_overhead_ms"] = (span - in_shards) / (res["shards"] / workers) * 1e3
    timings["per_task_overhead_is_bound"] = "shards_s" not in given
    return timings
