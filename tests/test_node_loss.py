"""Node loss on a real three-node Ray cluster on this machine (one loopback IP per node, nodes
ended by PID): a worker node killed mid-build -> the build completes on the others; the driver
killed mid-build -> a rerun resumes. Each ends with a clean build's key set, no key twice, no
temporary file."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from tests.conftest import REPO, manifest_keys, run_cli
from tests.ray_cluster import Cluster

pytestmark = pytest.mark.integration
RECIPE = str(REPO / "examples/sf-bay.yaml")
PLUGIN = str(REPO / "tests/data/plugins/slow.py")
SLOW = 1.5  # seconds per shard on the cluster


def _args(out: Path, seconds: float, starts: Path | None = None) -> list[str]:
    slow = f"{{seconds: {seconds}" + (f", starts_file: {starts}}}" if starts else "}")
    return [
        "run", RECIPE, "-o", str(out), "--no-progress", "--samples-per-shard", "8",
        "--set", "tiles.gsd_m=[60]", "--set", f"plugins=[{PLUGIN}]",
        "--set", f"filters.slow_test={slow}",
        "--set", "execution.shards_per_task=1",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with pytest.MonkeyPatch.context() as mp:
        nodes = Cluster(mp, workers=2)
        try:
            yield nodes
        finally:
            nodes.close()


@pytest.fixture(scope="module")
def clean_keys(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, str]]:
    out = tmp_path_factory.mktemp("clean") / "out"
    res = run_cli(*_args(out, 0.0), "--set", "execution.num_cpus=2")
    assert res.returncode == 0, res.stderr[-2000:]
    return manifest_keys(out)


def _driver(out: Path, address: str, starts: Path | None = None) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "geoweave.builders.cli", *_args(out, SLOW, starts)]
    return subprocess.Popen(
        [*cmd, "--ray-address", address], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True, env={**os.environ},
    )  # fmt: skip


def _complete_by(out: Path) -> dict[int, str]:
    """Shard -> the node IP that completed it, from the shards' stats files so far."""
    done = {}
    for p in out.glob("*.stats.json"):
        with contextlib.suppress(ValueError, OSError):
            stats = json.loads(p.read_text())
            done[int(stats["shard"])] = str(stats["worker"]).split(":")[0]
    return done


def _wait_until(proc: subprocess.Popen[str], ready: object, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while not ready():  # type: ignore[operator]
        assert proc.poll() is None, f"the build ended first: {proc.communicate()[1][-3000:]}"
        assert time.time() < deadline, "the build never got there"
        time.sleep(0.2)


def _in_flight_on(out: Path, starts: Path, ip: str) -> bool:
    """The node has completed a shard and is inside the next one."""
    started = starts.read_text().split().count(ip) if starts.exists() else 0
    done = list(_complete_by(out).values()).count(ip)
    return started > done >= 1


def _check_result(out: Path, clean_keys: list[tuple[str, str]]) -> None:
    keys = manifest_keys(out)
    assert keys == clean_keys  # the same samples, none lost
    assert len({k for k, _ in keys}) == len(keys)  # none twice
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]


def test_a_worker_node_killed_mid_build_the_build_completes_on_the_others(
    cluster: Cluster, clean_keys: list[tuple[str, str]], tmp_path: Path
) -> None:
    out, starts = tmp_path / "out", tmp_path / "starts.txt"
    proc = _driver(out, cluster.address, starts)
    try:
        _wait_until(proc, lambda: _in_flight_on(out, starts, "127.0.0.3"))
        cluster.kill("127.0.0.3")  # mid-build, mid-shard
        killed_at = len(_complete_by(out))
        _, err = proc.communicate(timeout=300)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err[-3000:]
    _check_result(out, clean_keys)
    by_node = _complete_by(out)
    assert killed_at < len(by_node)  # shards went on after the kill ...
    con = duckdb.connect(str(out / "manifest.duckdb"), read_only=True)
    workers = [w.split(":")[0] for (w,) in con.execute("SELECT worker FROM shards").fetchall()]
    assert con.execute("SELECT count(*) FROM shards WHERE status <> 'complete'").fetchone() == (0,)
    assert "127.0.0.3" in workers and {"127.0.0.2", "127.0.0.4"} & set(workers)
    # the killed node had started a shard it never finished; another node built it again
    started = starts.read_text().split()
    assert started.count("127.0.0.3") > workers.count("127.0.0.3")
    assert len(started) > len(workers) == len(by_node)


def test_the_driver_killed_mid_build_a_rerun_resumes(
    cluster: Cluster, clean_keys: list[tuple[str, str]], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    proc = _driver(out, cluster.address)
    try:
        _wait_until(proc, lambda: len(_complete_by(out)) >= 3)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    before = _complete_by(out)
    assert not (out / "manifest.duckdb").exists()
    time.sleep(2)  # Ray ends the dead driver's tasks on the nodes
    rerun = run_cli(*_args(out, SLOW), "--ray-address", cluster.address)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    resumed = int(rerun.stderr.split("resume: ")[1].split(" shards complete")[0])
    assert resumed >= len(before) >= 3
    _check_result(out, clean_keys)
