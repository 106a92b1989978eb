"""A real multi-node Ray cluster on this machine for the tests: one loopback IP per node, each
node in its own session so a test ends it by PID (never `ray stop`: it is machine-wide)."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import descendants, free_port

RAY = str(Path(sys.executable).with_name("ray"))
HEAD_IP = "127.0.0.2"


def start_node(args: list[str], tmp: str) -> subprocess.Popen[bytes]:
    cmd = [RAY, "start", "--block", "--num-cpus=1", "--disable-usage-stats", *args]
    if "--head" in args:
        cmd += [f"--temp-dir={tmp}", "--include-dashboard=false"]
    # Own session: the node and everything it starts are ended by process group, by PID.
    return subprocess.Popen(
        cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def alive_nodes(address: str) -> int | None:
    code = (
        f"import ray,sys; ray.init(address=sys.argv[1], _node_ip_address='{HEAD_IP}'); "
        "print(sum(x['Alive'] for x in ray.nodes()))"
    )
    res = subprocess.run([sys.executable, "-c", code, address], capture_output=True, text=True)
    lines = res.stdout.strip().splitlines()
    return int(lines[-1]) if res.returncode == 0 and lines else None


def wait_for_nodes(address: str, n: int, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if alive_nodes(address) == n:
            return
        time.sleep(1)
    raise AssertionError(f"the Ray cluster at {address} did not come up with {n} nodes")


class Cluster:
    """A head on 127.0.0.2 and ``workers`` more nodes on 127.0.0.3, 127.0.0.4, ..."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, workers: int = 1) -> None:
        # Ray >= 2.59 wants a shared token on every node and client, from the environment.
        monkeypatch.setenv("RAY_AUTH_MODE", "token")
        monkeypatch.setenv("RAY_AUTH_TOKEN", secrets.token_hex(16))
        monkeypatch.setenv("GEOWEAVE_RAY_NODE_IP", HEAD_IP)
        port = free_port(HEAD_IP)
        self.address = f"{HEAD_IP}:{port}"
        tmp = os.environ["RAY_TMPDIR"] + "c"
        head = start_node(["--head", f"--node-ip-address={HEAD_IP}", f"--port={port}"], tmp)
        self.nodes: dict[str, subprocess.Popen[bytes]] = {HEAD_IP: head}
        try:
            time.sleep(3)
            for i in range(workers):
                ip = f"127.0.0.{3 + i}"
                self.nodes[ip] = start_node(
                    [f"--address={self.address}", f"--node-ip-address={ip}"], tmp
                )
                # one at a time: two nodes starting at once on one machine time out
                wait_for_nodes(self.address, 2 + i)
        except BaseException:
            self.close()
            raise

    def kill(self, ip: str) -> None:
        """End one node and every process it started (its workers may leave its process
        group), by PID."""
        p = self.nodes.pop(ip)
        for pid in [p.pid, *descendants(p.pid)]:  # the whole tree, found before any dies
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()

    def close(self) -> None:
        for ip in [ip for ip in self.nodes if ip != HEAD_IP] + [HEAD_IP] * (HEAD_IP in self.nodes):
            self.kill(ip)
