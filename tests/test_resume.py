"""Resume: SIGKILL the driver after some shards complete, rerun, get the uninterrupted result."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.integration


# The example recipe at one GSD in small shards: many shards, so the kill lands mid-build.
RECIPE = str(REPO / "examples/sf-bay.yaml")
SMALL = ["--set", "tiles.gsd_m=[60]", "--samples-per-shard", "8", "--set", "execution.num_cpus=1"]


def _descendants(pid: int) -> list[int]:
    """All processes below ``pid`` (from /proc; Ray's processes started by the driver)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _kill_when_shards_complete(out: Path, n: int) -> int:
    cli = [sys.executable, "-m", "geoweave.builders.cli"]
    cmd = [*cli, "run", RECIPE, "-o", str(out), "--no-progress", *SMALL]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while (
        len(list(out.glob("*.stats.json"))) < n and proc.poll() is None and time.time() < deadline
    ):
        time.sleep(0.05)
    ray_procs = _descendants(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for pid in ray_procs:  # end this test's Ray by PID, never `ray stop`
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(list(out.glob("*.stats.json")))


def _keys(out: Path) -> list[tuple[str, str]]:
    con = duckdb.connect(str(out / "manifest.duckdb"), read_only=True)
    return con.execute("SELECT key, status FROM samples ORDER BY key").fetchall()


def test_rerun_after_sigkill_equals_uninterrupted_run(tmp_path: Path) -> None:
    whole = tmp_path / "whole"
    assert run_cli("run", RECIPE, "-o", str(whole), "--no-progress", *SMALL).returncode == 0
    total = len(list(whole.glob("*.stats.json")))
    assert total >= 6

    killed = tmp_path / "killed"
    done_before = _kill_when_shards_complete(killed, 3)
    assert 3 <= done_before < total, "the driver must die mid-build"
    assert not (killed / "manifest.duckdb").exists()

    rerun = run_cli("run", RECIPE, "-o", str(killed), "--no-progress", *SMALL)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{total - done_before} run now" in rerun.stdout
    assert _keys(killed) == _keys(whole)
    keys = [k for k, _ in _keys(killed)]
    assert len(keys) == len(set(keys))
    assert not list(killed.glob("*.tmp-*"))
    tars = sorted(p.name for p in killed.glob("*.tar"))
    assert tars == sorted(p.name for p in whole.glob("*.tar"))


def test_resume_leaves_the_plan_alone_and_recovers_damaged_run_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run_cli("run", RECIPE, "-o", str(out), "--no-progress", *SMALL).returncode == 0
    plan = out / "plan.parquet"
    before = (plan.stat().st_ino, plan.stat().st_mtime_ns)
    again = run_cli("run", RECIPE, "-o", str(out), "--no-progress", *SMALL)
    assert again.returncode == 0 and "0 run now" in again.stdout
    assert (plan.stat().st_ino, plan.stat().st_mtime_ns) == before  # not rewritten
    keys = _keys(out)

    # What a SIGKILL mid-write did to files written in place: 0 bytes.
    plan.write_bytes(b"")
    first_record = sorted((out / "_runs").glob("*.json"))[0]
    first_record.write_bytes(b"")
    res = run_cli("run", RECIPE, "-o", str(out), "--no-progress", *SMALL)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    assert f"{plan} is damaged" in res.stderr and "re-deriving it" in res.stderr
    assert f"skipping the damaged run record {first_record}" in res.stderr
    assert _keys(out) == keys
    con = duckdb.connect(str(out / "manifest.duckdb"), read_only=True)
    assert (
        con.execute("SELECT count(*) FROM runs").fetchone()[0] == 2
    )  # runs 2 and 3: the first record is damaged
    con.close()
    assert plan.stat().st_size > 0 and not list(out.glob("*.tmp-*"))

    # The recipe is still checked against the run records when the plan is damaged.
    plan.write_bytes(b"")
    other = run_cli("run", RECIPE, "-o", str(out), "--no-progress", *SMALL, "--seed", "7")
    assert other.returncode == 2 and "differs in seed" in other.stderr, other.stderr[-2000:]
