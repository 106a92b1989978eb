"""Shards run while local Ray starts.

Starting a local Ray and its first worker costs seconds (about 4 to 6 on a 2-core laptop),
longer than a small build's shard work. Instead of waiting, the driver forks processes, one
fewer than the CPUs the build may use (``execution.num_cpus``, else every CPU; at least one:
``executor.early_processes``); they take shards from the same queue as the Ray tasks and run
them until Ray has returned its first result; then each finishes the shard in hand and exits.
A shard one took but did not finish (an error, a crash) goes back to the queue and runs on Ray
with Ray's retries, so nothing is lost or written twice: every shard is handed out exactly
once by ``ShardQueue``.

Only on Linux (a fork copies the prepared sources and labels for free) and only for a local
Ray; ``execution.early_start: false`` turns it off.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import socket
import sys
from typing import Any

from geoweave.builders.plan import Plan
from geoweave.builders.shard import BuildContext, run_planned_shard
from geoweave.errors import RETRYABLE, is_disk_full
from geoweave.stats import ShardStats
from geoweave.text import plain_error

_FORK = multiprocessing.get_context("fork") if sys.platform == "linux" else None


class ShardQueue:
    """Shard numbers handed out once each, shared by the driver and the forked early worker."""

    def __init__(self, shards: list[int]) -> None:
        self._shards = list(shards)
        ctx = _FORK or multiprocessing.get_context()
        self._next = ctx.Value("i", 0)
        self._returned: list[int] = []  # the driver's own: shards given back to be rerun

    def take(self) -> int | None:
        """The next shard to run, or None when all are handed out."""
        if self._returned:
            return self._returned.pop()
        with self._next.get_lock():
            i = int(self._next.value)
            if i >= len(self._shards):
                return None
            self._next.value = i + 1
        return self._shards[i]

    @property
    def size(self) -> int:
        return len(self._shards)

    def exhausted(self) -> bool:
        """Every shard handed out, none given back."""
        with self._next.get_lock():
            return not self._returned and int(self._next.value) >= len(self._shards)

    def take_many(self, n: int) -> list[int]:
        """Up to ``n`` shards (fewer at the end; empty when all are handed out)."""
        out: list[int] = []
        while len(out) < n and (shard := self.take()) is not None:
            out.append(shard)
        return out

    def close(self) -> bool:
        """Hand out nothing more (the disk is full); True when shards were left."""
        left = bool(self._returned)
        self._returned.clear()
        with self._next.get_lock():
            left = left or int(self._next.value) < len(self._shards)
            self._next.value = len(self._shards)
        return left

    def give_back(self, shard: int) -> None:
        self._returned.append(shard)


def _loop(ctx: BuildContext, plan: Plan, shards: ShardQueue, stop: Any, out: Any) -> None:
    """The early worker: run shards until told to stop; report each start, result and error."""
    _nice_as_ray_workers()
    node = f"{socket.gethostname()}-before-ray"
    while not stop.is_set():
        shard = shards.take()
        if shard is None:
            break
        out.put(("start", shard))
        try:
            out.put(("done", run_planned_shard(ctx, plan, shard, node)))
        except Exception as e:  # a retryable fault reruns on Ray; a deterministic one fails
            msg = plain_error(e)
            full = is_disk_full(e)
            out.put(("error", shard, msg, isinstance(e, RETRYABLE) and not full))
            if full:  # no shard can be written: hand out no more, to Ray either
                shards.close()
                break


def _nice_as_ray_workers() -> None:
    """Run at the priority of Ray's workers (``RAY_worker_niceness``, 15 by default), below
    Ray's own start: at the driver's, two early workers on 2 CPUs starved Ray's niced workers
    of the CPU they need to import the shard code, and Ray came up after 16 s instead of 5."""
    try:
        target = int(os.environ.get("RAY_worker_niceness", "15"))  # noqa: SIM112 (Ray's name)
    except ValueError:
        target = 15
    current = os.nice(0)
    if target > current:
        os.nice(target - current)


class EarlyWorker:
    """Forked processes (``executor.early_processes``) running shards from a ``ShardQueue``
    while Ray starts."""

    def __init__(
        self, ctx: BuildContext, plan: Plan, shards: ShardQueue, processes: int = 1
    ) -> None:
        assert _FORK is not None
        self._shards = shards
        self._stop = _FORK.Event()
        self._out = _FORK.Queue()
        self.processes = processes
        args = (ctx, plan, shards, self._stop, self._out)
        self._procs = [
            _FORK.Process(target=_loop, args=args, daemon=True) for _ in range(processes)
        ]
        for proc in self._procs:
            proc.start()

    @staticmethod
    def available() -> bool:
        return _FORK is not None

    def stop(self) -> tuple[list[ShardStats], list[tuple[int, str]]]:
        """Let the workers finish their shards and exit. Returns the stats of the shards they
        completed and (shard, error) of those that failed deterministically; every other shard
        they started (a retryable fault, or lost with a process) goes back to the queue."""
        self._stop.set()
        messages = self._drain(until_exit=True)
        for proc in self._procs:
            proc.join()
        messages += self._drain(until_exit=False)  # what they sent just before exiting
        started: set[int] = set()
        results: list[ShardStats] = []
        failed: list[tuple[int, str]] = []
        for msg in messages:
            if msg[0] == "start":
                started.add(msg[1])
            elif msg[0] == "done":
                results.append(msg[1])
                started.discard(msg[1].shard)
            elif msg[0] == "error" and not msg[3]:
                failed.append((msg[1], msg[2]))
                started.discard(msg[1])
        for shard in sorted(started):  # a retryable fault, or lost with the process
            self._shards.give_back(shard)
        return results, failed

    def _drain(self, until_exit: bool) -> list[Any]:
        messages = []
        while True:
            try:
                messages.append(self._out.get(timeout=0.1))
            except queue.Empty:
                if not (until_exit and any(p.is_alive() for p in self._procs)):
                    return messages
