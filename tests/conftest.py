"""Shared fixtures: paths to the real samples, an isolated cache and Ray temp dir per session."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
SF_BAY = SHARED / "sf-bay"
HELSINKI = SHARED / "helsinki"


@pytest.fixture(scope="session", autouse=True)
def _isolated_env(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Label-index cache and Ray's temp dir under pytest's tmp; no usage stats."""
    os.environ["GEOWEAVE_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    ray_tmp = Path("/tmp") / f"gwray{os.getpid()}"  # short: Ray's socket paths have a length limit
    ray_tmp.mkdir(exist_ok=True)
    os.environ["RAY_TMPDIR"] = str(ray_tmp)
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (another process may still take it before it is used)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def shard_rows(recipe: Any, out: Path | None = None) -> list[dict[str, Any]]:
    """Prepare ``recipe`` and build its first shard in this process (no Ray): the sidecar's
    rows, every planned tile of the shard."""
    import pyarrow.parquet as pq

    from geoweave.builders.prepare import prepare
    from geoweave.builders.shard import run_shard

    out = out or recipe.output.dir
    ctx, plan, _ = prepare(recipe.check_components(), out)
    out.mkdir(parents=True, exist_ok=True)
    run_shard(ctx, 0, plan.shard_tiles(0))
    return pq.read_table(out / f"{recipe.name}-000000.samples.parquet").to_pylist()


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run ``build-dataset`` in a subprocess, as a user would."""
    cmd = [sys.executable, "-m", "geoweave.builders.cli", *args]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=os.environ.copy()
    )


def run_main(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``build-dataset`` in this process (for cases that stop before Ray starts): the same
    exit code and messages as ``run_cli``, without the cost of a new interpreter."""
    import contextlib
    import io

    from geoweave.builders.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse's own errors
            code = int(e.code or 0)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def descendants(pid: int) -> list[int]:
    """All processes below ``pid`` (from /proc: the Ray processes a driver started), so a test
    can end its own Ray by PID (never `ray stop`: it is machine-wide)."""
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


def manifest_keys(out: Path) -> list[tuple[str, str]]:
    """(key, status) of every sample in a build's manifest, sorted by key."""
    import duckdb

    con = duckdb.connect(str(out / "manifest.duckdb"), read_only=True)
    try:
        return con.execute("SELECT key, status FROM samples ORDER BY key").fetchall()
    finally:
        con.close()
