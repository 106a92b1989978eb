"""Reliability: kill a build with SIGKILL at every step that writes, rerun it, and get exactly
the result of a build that was never interrupted: the same keys, none twice, no temporary
file anywhere.

The kill points are ``geoweave.files.crash_point`` calls, armed by ``$GEOWEAVE_CRASH_AT``: the
plan's temporary file written but not renamed; a shard's files renamed but its stats marker
not written (the whole build is killed from inside the Ray worker: driver first, then the
worker); the first run record written but not renamed; the manifest built but not renamed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, descendants, manifest_keys, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.reliability]
RECIPE = str(REPO / "examples/sf-bay.yaml")
SMALL = ["--set", "tiles.gsd_m=[60]", "--samples-per-shard", "8", "--set", "execution.num_cpus=1"]
CRASH_POINTS = ["plan", "shard:2", "shard:9", "run_record", "manifest"]


def _killed_run(out: Path, point: str) -> int:
    """Run the build with a crash point armed; end what is left of its Ray by PID."""
    env = {**os.environ, "GEOWEAVE_CRASH_AT": point}
    cmd = [sys.executable, "-m", "geoweave.builders.cli", "run", RECIPE, "-o", str(out)]
    proc = subprocess.Popen(
        [*cmd, "--no-progress", *SMALL], env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    leftovers: set[int] = set()
    while proc.poll() is None:
        leftovers.update(descendants(proc.pid))
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.2)
    for pid in leftovers:  # never `ray stop`: it is machine-wide
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # anything of its session still alive
    return proc.returncode


@pytest.fixture(scope="module")
def clean_keys(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, str]]:
    out = tmp_path_factory.mktemp("clean") / "out"
    res = run_cli("run", RECIPE, "-o", str(out), "--no-progress", *SMALL)
    assert res.returncode == 0, res.stderr[-2000:]
    return manifest_keys(out)


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_sigkill_at_each_step_then_rerun_equals_a_clean_build(
    tmp_path: Path, point: str, clean_keys: list[tuple[str, str]]
) -> None:
    out = tmp_path / "out"
    assert _killed_run(out, point) == -signal.SIGKILL  # it died at the crash point
    assert not (out / "manifest.duckdb").exists()
    rerun = run_cli("run", RECIPE, "-o", str(out), "--no-progress", *SMALL)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "Traceback" not in rerun.stderr
    keys = manifest_keys(out)
    assert keys == clean_keys
    assert len({k for k, _ in keys}) == len(keys)  # no key twice
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]
