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

from tests.conftest import REPO, descendants, manifest_keys, run_cli

pytestmark = pytest.mark.integration


# The example recipe at one GSD in small shards: many shards, so the kill lands mid-build.
RECIPE = str(REPO / "examples/sf-bay.yaml")
SMALL = ["--set", "tiles.gsd_m=[60]", "--samples-per-shard", "8", "--set", "execution.num_cpus=1"]


def _kill_when_shards_complete(out: Path, n: int) -> int:
    cli = [sys.executable, "-m", "geoweave.builders.cli"]
    cmd = [*cli, "run", RECIPE, "-o", str(out), "--no-progress", *SMALL]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while (
        len(list(out.glob("*.stats.json"))) < n and proc.poll() is None and time.time() < deadline
    ):
        time.sleep(0.05)
    ray_procs = descendants(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for pid in ray_procs:  # end this test's Ray by PID, never `ray stop`
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(list(out.glob("*.stats.json")))


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
    assert manifest_keys(killed) == manifest_keys(whole)
    keys = [k for k, _ in manifest_keys(killed)]
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
    keys = manifest_keys(out)

    # What a SIGKILL mid-write did to files written in place: 0 bytes.
    plan.write_bytes(b"")
    first_record = sorted((out / "_runs").glob("*.json"))[0]
    first_record.write_bytes(b"")
    res = run_cli("run", RECIPE, "-o", str(out), "--no-progress", *SMALL)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    assert f"{plan} is damaged" in res.stderr and "re-deriving it" in res.stderr
    assert f"skipping the damaged run record {first_record}" in res.stderr
    assert manifest_keys(out) == keys
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


def _members(tar: Path) -> dict[str, bytes]:
    """A tar's members and their bytes (a rebuilt tar differs only in its header mtimes)."""
    import tarfile

    with tarfile.open(tar) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf.getmembers()}  # type: ignore[union-attr]


def _zero_4k(path: Path, keep_mtime: bool) -> None:
    """Zero up to 4 KB inside the file (from byte 512: past the first member's header)."""
    st = path.stat()
    with open(path, "r+b") as f:
        f.seek(512)
        f.write(b"\0" * min(4096, st.st_size - 1024))
    if keep_mtime:  # damage that leaves no trace in the metadata (bit rot, a bad copy)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size


def test_damaged_shard_is_found_by_verify_and_rebuilt_by_run(tmp_path: Path) -> None:
    from tests.conftest import run_main

    out = tmp_path / "out"
    assert run_cli("run", RECIPE, "-o", str(out), "--no-progress", *SMALL).returncode == 0
    assert run_main("verify", str(out)).returncode == 0
    tar = sorted(out.glob("*.tar"))[1]
    good = _members(tar)

    _zero_4k(tar, keep_mtime=False)
    res = run_main("verify", str(out))
    assert res.returncode == 1 and f"damaged  {tar.name.removesuffix('.tar')}" in res.stdout
    assert "checksum mismatch" in res.stdout and "1 damaged" in res.stdout
    rerun = run_cli("run", RECIPE, "-o", str(out), "--no-progress", *SMALL)
    assert rerun.returncode == 0 and "1 run now" in rerun.stdout, rerun.stdout
    assert _members(tar) == good and run_main("verify", str(out)).returncode == 0

    _zero_4k(tar, keep_mtime=True)  # the fast path (size + mtime) cannot see this ...
    assert "0 run now" in run_cli("run", RECIPE, "-o", str(out), "--no-progress", *SMALL).stdout
    deep = run_cli("run", RECIPE, "-o", str(out), "--no-progress", "--verify", *SMALL)
    assert deep.returncode == 0 and "1 run now" in deep.stdout  # ... --verify does
    assert _members(tar) == good


def test_verify_refuses_a_folder_that_is_not_a_build(tmp_path: Path) -> None:
    from tests.conftest import run_main

    res = run_main("verify", str(tmp_path))
    assert res.returncode == 2 and "not a geoweave build folder" in res.stderr
