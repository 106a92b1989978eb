"""Starting, joining and stopping Ray: a local Ray bound to loopback, a cluster address
checked before ``ray.init`` retries it for minutes, and a shutdown on a thread while the
corpus passes and the manifest finish. With ``executor.py`` (which runs the shards) this is the
executor: Ray is imported in these two modules only (STYLE.md 6)."""

from __future__ import annotations

import gc
import logging
import os
import socket
import sys
import threading
import time
from typing import Any

from geoweave.builders.recipe import ExecutionConfig
from geoweave.errors import FatalError

log = logging.getLogger("geoweave")


def default_node_ip() -> str | None:
    """Local Ray binds to loopback on Linux (a laptop build needs no open ports).

    127.0.0.1 is rewritten by Ray to the machine's address, so another loopback address is used.
    """
    return os.environ.get("GEOWEAVE_RAY_NODE_IP") or (
        "127.0.0.2" if sys.platform == "linux" else None
    )


def init_ray(cfg: ExecutionConfig) -> bool:
    """Connect to ``cfg.ray_address`` or start a local Ray; returns True when started here."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"log_to_driver": True}
    if cfg.ray_address:
        # The driver joins as a client of the cluster; bind it like the cluster when asked to.
        ip = cfg.node_ip_address or os.environ.get("GEOWEAVE_RAY_NODE_IP")
        if ip:
            kwargs["_node_ip_address"] = ip
        _check_reachable(cfg.ray_address)
        try:
            ray.init(address=cfg.ray_address, **kwargs)
        except Exception as e:
            raise FatalError(
                f"cannot connect to the Ray cluster at {cfg.ray_address} ({e}); check "
                "--ray-address / execution.ray_address and that the cluster is up (`ray status`)"
            ) from e
        return True
    kwargs["include_dashboard"] = False
    kwargs["num_cpus"] = local_cpus(cfg)
    ip = cfg.node_ip_address or default_node_ip()
    if ip:
        kwargs["_node_ip_address"] = ip
    if os.environ.get("RAY_TMPDIR"):
        kwargs["_temp_dir"] = os.environ["RAY_TMPDIR"]
    ray.init(**kwargs)
    return True


def ray_connected() -> bool:
    """Whether this process is connected to a Ray already, without importing Ray (0.4 s) when
    it is not: the early workers fork before that import."""
    ray = sys.modules.get("ray")
    return bool(ray is not None and ray.is_initialized())


def local_cpus(cfg: ExecutionConfig) -> int:
    """The CPUs a local Ray gets, and the early workers: ``execution.num_cpus``, else all."""
    return cfg.num_cpus or os.cpu_count() or 1


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on a wrong ``host:port``: ray.init retries an unreachable GCS for minutes,
    and one whose port answers but is not Ray (an HTTP server, the dashboard's 8265) forever.
    A Ray GCS (and a Ray Client server) speaks gRPC, so it answers an HTTP/2 preface with its
    SETTINGS frame; anything else is refused here."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto" and other forms Ray resolves itself
    hint = "check --ray-address / execution.ray_address and that the cluster is up (`ray status`)"
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as sock:
            reply = _http2_reply(sock, timeout)
    except OSError as e:
        raise FatalError(f"cannot connect to the Ray cluster at {address} ({e}); {hint}") from e
    if len(reply) < 9 or reply[3] != 0x04:  # an HTTP/2 frame header of type SETTINGS
        seen = f"it answered {reply[:24]!r}" if reply else f"it sent nothing in {timeout:g} s"
        raise FatalError(
            f"{address} answers but is not a Ray cluster ({seen}, not gRPC): give the GCS "
            "address that `ray start --head` printed (port 6379 by default; 8265 is the "
            f"dashboard); {hint}"
        )


_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def _http2_reply(sock: socket.socket, timeout: float) -> bytes:
    """The first 9 bytes a server sends back to an HTTP/2 preface and an empty SETTINGS."""
    sock.settimeout(timeout)
    sock.sendall(_HTTP2_PREFACE)
    head = b""
    try:
        while len(head) < 9 and (chunk := sock.recv(9 - len(head))):
            head += chunk
    except TimeoutError:
        pass
    return head


def ray_shutdown() -> None:
    import ray

    ray.shutdown()


def _kill_autoscaler_monitor() -> None:
    """Kill the local Ray's autoscaler monitor outright. ``ray.shutdown`` sends it SIGTERM,
    which it ignores, and waits a full second before SIGKILL; a one-machine Ray started by
    this build has nothing to autoscale and nothing to save. Uses Ray's node handle, which is
    private: when it is not there (another Ray version), the plain shutdown runs."""
    try:
        from ray._private import worker

        node = worker._global_node
        monitors: list[Any] = node.all_processes.get("monitor", []) if node is not None else []
        for info in monitors:
            info.process.kill()
            info.process.wait(timeout=5)
    except Exception as e:  # the plain shutdown still stops everything, only slower
        log.debug("could not stop Ray's monitor first: %s", e)


def freeze_driver_heap() -> None:
    """Move what the driver holds now (modules, the prepared sources, the plan, Ray's client)
    out of the cyclic garbage collector's sight, after collecting the young objects: called
    before the early workers fork and again once Ray is up. ``RayStopper``'s full collection
    then scans only what the shards left (2 ms against 86 ms on the benchmark's 256 px build,
    time the corpus passes waited for the GIL), and so does every automatic one meanwhile.
    ``build`` unfreezes at its end (``thaw_driver_heap``): a library caller's heap is
    collected as before."""
    gc.collect(1)
    gc.freeze()


def thaw_driver_heap(frozen_before: int) -> None:
    """Undo ``freeze_driver_heap`` unless the caller had frozen objects of its own before the
    build (``frozen_before``: ``gc.get_freeze_count()`` then), which it may rely on staying
    frozen."""
    if frozen_before == 0:
        gc.unfreeze()


class RayStopper:
    """Shut down the local Ray that ``run_shards`` started, on a thread, so the corpus passes
    and the manifest (which need no Ray) run meanwhile: ``ray.shutdown`` waits about a second
    for Ray's processes to exit.

    The thread collects cyclic garbage before the shutdown: an object reference freed by a
    collection while the shutdown runs makes Ray's core worker end the process at once ("the
    language frontend accesses the Ray's worker after it is shutdown"), before the build's
    summary is printed. The executor leaves none (``task_result``); this is for any other
    (140 ms of the thread's time, which the caller's DuckDB and numpy work mostly overlaps)."""

    def __init__(self, started_here: bool = True) -> None:
        import ray

        self.seconds = 0.0
        self._thread: threading.Thread | None = None
        if started_here and ray.is_initialized():  # a Ray the caller started stays up
            self._thread = threading.Thread(target=self._stop, name="ray-shutdown")
            self._thread.start()

    def _stop(self) -> None:
        import ray

        t = time.time()
        gc.collect()  # before the shutdown starts; the caller's later collections find none
        _kill_autoscaler_monitor()
        ray.shutdown()
        self.seconds = time.time() - t

    def join(self) -> float:
        """Wait for the shutdown; returns how long it took (0 when nothing was running)."""
        if self._thread is not None:
            self._thread.join()
        return self.seconds
