"""`--ray-address`: a build on an existing two-node Ray cluster (one loopback IP per node)."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from tests.conftest import REPO, free_port, run_cli, run_main

pytestmark = pytest.mark.integration
RAY = str(Path(sys.executable).with_name("ray"))


def _start(args: list[str], tmp: str) -> subprocess.Popen[bytes]:
    cmd = [RAY, "start", "--block", "--num-cpus=1", "--disable-usage-stats", *args]
    if "--head" in args:
        cmd += [f"--temp-dir={tmp}", "--include-dashboard=false"]
    # Own session: the node and everything it starts are ended by process group, by PID.
    return subprocess.Popen(
        cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def _wait_for_nodes(address: str, n: int) -> None:
    code = (
        "import ray,sys; ray.init(address=sys.argv[1], _node_ip_address='127.0.0.2'); "
        "print(sum(x['Alive'] for x in ray.nodes()))"
    )
    deadline = time.time() + 90
    while time.time() < deadline:
        res = subprocess.run([sys.executable, "-c", code, address], capture_output=True, text=True)
        if res.returncode == 0 and res.stdout.strip().splitlines()[-1:] == [str(n)]:
            return
        time.sleep(1)
    raise AssertionError(f"the Ray cluster at {address} did not come up with {n} nodes")


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    # Ray >= 2.59 wants a shared token on every node and client; it comes from the environment.
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", secrets.token_hex(16))
    monkeypatch.setenv("GEOWEAVE_RAY_NODE_IP", "127.0.0.2")
    port = free_port("127.0.0.2")
    address = f"127.0.0.2:{port}"
    tmp = os.environ["RAY_TMPDIR"] + "c"
    head = _start(["--head", "--node-ip-address=127.0.0.2", f"--port={port}"], tmp)
    nodes = [head]
    try:
        time.sleep(3)
        nodes.append(_start([f"--address={address}", "--node-ip-address=127.0.0.3"], tmp))
        _wait_for_nodes(address, 2)
        yield address
    finally:
        for p in reversed(nodes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


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
    import time

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
