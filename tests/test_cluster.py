"""`--ray-address`: a build on an existing two-node Ray cluster (one loopback IP per node)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from tests.conftest import REPO, free_port, run_cli, run_main
from tests.ray_cluster import Cluster

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    nodes = Cluster(monkeypatch, workers=1)
    try:
        yield nodes.address
    finally:
        nodes.close()


def test_build_on_an_existing_two_node_cluster(cluster: str, tmp_path: Path) -> None:
    res = run_cli(
        "run", str(REPO / "examples/sf-bay.yaml"), "-o", str(tmp_path / "out"),
        "--set", "tiles.gsd_m=[60]", "--samples-per-shard", "16", "--ray-address", cluster,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    con = duckdb.connect(str(tmp_path / "out" / "manifest.duckdb"), read_only=True)
    workers = {w.split(":")[0] for (w,) in con.execute("SELECT worker FROM shards").fetchall()}
    assert con.execute("SELECT count(*) FROM shards WHERE status = 'complete'").fetchone()[0] >= 4
    assert con.execute("SELECT count(*) FROM samples WHERE status = 'kept'").fetchone()[0] > 0
    assert workers == {"127.0.0.2", "127.0.0.3"}  # shards ran on both nodes of the cluster


def test_unreachable_cluster_is_a_clear_error(tmp_path: Path) -> None:
    res = run_cli(
        "run", str(REPO / "examples/sf-bay.yaml"), "-o", str(tmp_path / "o"),
        "--ray-address", f"127.0.0.2:{free_port('127.0.0.2')}",
    )  # fmt: skip
    assert res.returncode == 2
    assert "cannot connect to the Ray cluster" in res.stderr
    assert not (tmp_path / "o").exists()  # nothing written


@pytest.mark.parametrize("server", ["http", "silent"])
def test_address_that_answers_but_is_not_ray_is_a_clear_error(tmp_path: Path, server: str) -> None:
    """An HTTP server (the dashboard's port by mistake), or a port that accepts and says
    nothing: refused within seconds instead of ray.init retrying forever."""
    import http.server
    import threading

    if server == "http":
        srv = http.server.ThreadingHTTPServer(("127.0.0.2", 0), http.server.BaseHTTPRequestHandler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        port = srv.server_address[1]
    else:
        silent = socket.create_server(("127.0.0.2", 0))
        port = silent.getsockname()[1]
    started = time.time()
    res = run_main(
        "run", str(REPO / "examples/sf-bay.yaml"), "-o", str(tmp_path / "o"),
        "--ray-address", f"127.0.0.2:{port}",
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert "answers but is not a Ray cluster" in res.stderr and "Traceback" not in res.stderr
    assert time.time() - started < 30
    assert not (tmp_path / "o").exists()
