"""Ray execution: shards in small batches per task, retries, progress, failed shards recorded.

The executor is this module and ``ray_start.py`` (starting, joining and stopping Ray): Ray is
imported there only; every pipeline step is a plain function (STYLE.md 6).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from tqdm import tqdm

from geoweave.builders.early import EarlyWorker, ShardQueue
from geoweave.builders.plan import Plan
from geoweave.builders.ray_start import (
    freeze_driver_heap,
    init_ray,
    local_cpus,
    ray_connected,
    ray_shutdown,
)
from geoweave.builders.recipe import ExecutionConfig
from geoweave.builders.services import start_services, uses_ray_services
from geoweave.builders.shard import BuildContext, run_planned_shard
from geoweave.builders.worker_state import warm_up
from geoweave.builders.writers import complete_stats, shard_stem, stats_path, write_stats
from geoweave.errors import DISK_FULL, RETRYABLE, is_disk_full
from geoweave.files import temp_name
from geoweave.stats import ShardStats
from geoweave.text import plain_error

# Shard-level faults worth another attempt (``RETRYABLE``): a lost worker (Ray retries those by
# itself), I/O errors of the writer or of a shared file system. Anything else raised out of a
# shard is deterministic (the same input fails the same way) and is recorded as failed at once.


log = logging.getLogger("geoweave")


Outcome = ShardStats | tuple[int, str]  # a shard's stats, or (shard, error) when it failed


def _run_shards_on_node(ctx: BuildContext, plan: Plan, batch: list[int]) -> list[Outcome]:
    """The Ray task: ``run_shard`` for each shard of a batch, labelled with the node it ran on.

    A task gets shard numbers and reads their tiles from the plan file in the output folder
    (which every node sees): a batch of 8 shards of 256 tiles as ``Tile`` objects took the
    driver 7 ms to pickle and each task 6 ms to unpickle, per task.

    A shard already complete on disk (an earlier attempt of this task got that far) is not run
    again. A deterministic error fails its own shard only; a retryable one (``RETRYABLE``, and a
    lost worker) fails the task, which Ray retries from the first incomplete shard."""
    import ray

    node = ray.util.get_node_ip_address()
    if not batch:  # the first, empty task of a local build (see ``_dispatch``)
        warm_up(ctx.recipe, ctx.osm_index_dirs)
    out: list[Outcome] = []
    for shard in batch:
        done = complete_stats(ctx.out_dir, ctx.recipe.name, shard)
        if done is not None:
            out.append(done)
            continue
        try:
            out.append(run_planned_shard(ctx, plan, shard, node))
        except Exception as e:
            if is_disk_full(e):  # another attempt would fill the same disk: stop the batch
                out.append((shard, plain_error(e)))
                return out
            if isinstance(e, RETRYABLE):
                raise
            out.append((shard, plain_error(e)))
    return out


def early_processes(cpus: int, shards: int) -> int:
    """Early workers for a local build given ``cpus`` CPUs: one fewer than the CPUs, at least
    one, at most one per shard. Ray's own start keeps about one CPU busy (some 9 CPU-seconds
    over its 6 s on a 2-CPU VM), so an early worker per CPU only crowded it: on 2 CPUs the
    second one ran its shards at a quarter of their speed and was still finishing them while
    both Ray workers ran (2 workers, 4 builds each way: 9,216 tiles of 256 px 19.0 s against
    20.6 s, 36,864 of 128 px 33.0 s against 34.8 s)."""
    return max(1, min(cpus - 1, shards))


def shards_per_task(cfg: ExecutionConfig, shards: int, cpus: int) -> int:
    """Shards per Ray task: ``execution.shards_per_task``, else 1 to 8 so that each of several
    CPUs still gets at least 16 tasks (balance at the end: a worker waits at most a task's
    length). One CPU needs no balance and gets 8: between two tasks a worker waited 6.5-17 ms
    for the next (a 256 px shard takes about 0.3 s), 13 such waits in a 36-shard build."""
    if cfg.shards_per_task:
        return cfg.shards_per_task
    if cpus <= 1:
        return 8
    return max(1, min(8, shards // (16 * cpus)))


def _record_failure(ctx: BuildContext, shard: int, n_tiles: int, error: str) -> ShardStats:
    stats = ShardStats.failed(shard, n_tiles, error)
    try:
        write_stats(ctx.out_dir, ctx.recipe.name, stats, ".tmp-failed")
    except OSError as e:  # a full disk: the failure is still in this run's results
        log.warning("could not record shard %d as failed: %s", shard, plain_error(e))
        with contextlib.suppress(OSError):
            temp_name(stats_path(ctx.out_dir, ctx.recipe.name, shard), ".tmp-failed").unlink()
    return stats


def _collect(
    ctx: BuildContext, plan: Plan, batch: list[int], ref: Any, queue: ShardQueue
) -> list[ShardStats]:
    """The stats of a finished task's shards (failure records for those that failed).

    A task out of retries failed on its first incomplete shard, which had every attempt: that
    shard is recorded failed; the batch's shards after it never ran and go back to the queue."""
    outcomes, msg = task_result(ref)
    if msg is not None:
        done = {s: complete_stats(ctx.out_dir, ctx.recipe.name, s) for s in batch}
        todo = [s for s in batch if done[s] is None]
        for s in reversed(todo[1:]):
            queue.give_back(s)
        stats = [d for d in done.values() if d is not None]
        return stats + ([_failed(ctx, plan, todo[0], msg)] if todo else [])
    return [o if isinstance(o, ShardStats) else _failed(ctx, plan, *o) for o in outcomes]


def task_result(ref: Any) -> tuple[list[Outcome], str | None]:
    """A finished task's outcomes, or its error as plain text.

    The error's frames are cleared: the frames of a failed ``ray.get`` and its exception form
    a reference cycle that holds ``ref``, and a reference freed by the cyclic collector while
    Ray shuts down on ``RayStopper``'s thread makes Ray end the process at once."""
    import ray

    try:
        return ray.get(ref), None
    except Exception as e:
        msg = plain_error(e)
        seen: BaseException | None = e
        while seen is not None:  # the exception, its cause and its context
            traceback.clear_frames(seen.__traceback__)
            seen = seen.__cause__ or seen.__context__
        return [], msg


def _failed(ctx: BuildContext, plan: Plan, shard: int, msg: str) -> ShardStats:
    """Report a shard out of attempts on stderr and record it as failed."""
    msg = msg.strip()
    name = shard_stem(ctx.recipe.name, shard)
    tqdm.write(f"shard {name} failed: {msg.splitlines()[-1]}", file=sys.stderr)
    return _record_failure(ctx, shard, len(plan.shard_tiles(shard)), msg)


def run_shards(
    ctx: BuildContext,
    plan: Plan,
    shards: list[int],
    progress: bool = True,
    timings: dict[str, float] | None = None,
    after_fork: Callable[[], None] | None = None,
    on_done: Callable[[list[ShardStats]], None] | None = None,
) -> list[ShardStats]:
    """Run the given shards on Ray; a shard that fails after its retries is recorded as failed.

    When this starts a local Ray, an early worker (``builders/early.py``) runs shards while Ray
    starts. ``timings`` gets ``ray_start_s``; ``after_fork`` is called once that worker exists
    (background threads must start after a fork, not before); ``on_done`` gets the stats of
    shards as they finish (complete or failed). A local Ray started here is left
    running for the caller to stop with ``RayStopper`` (or ``ray_shutdown``).
    """
    cfg = ctx.recipe.execution
    queue = ShardQueue(shards)
    local = not cfg.ray_address and not ray_connected()
    freeze_driver_heap()  # before the fork: the early workers inherit it frozen
    early = (
        EarlyWorker(ctx, plan, queue, processes=early_processes(local_cpus(cfg), len(shards)))
        if local
        and cfg.early_start
        and EarlyWorker.available()
        and not uses_ray_services(ctx.recipe)
        else None
    )
    if after_fork is not None:
        after_fork()
    if early is not None:
        log.info("starting a local Ray; %d early worker(s) run shards meanwhile", early.processes)
    t = time.time()
    try:
        started = init_ray(cfg)  # a no-op when the caller connected already
    except BaseException:
        if early is not None:  # what it completed stays complete; a rerun resumes
            early.stop()
        raise
    if timings is not None and started:  # a cluster the caller joined was timed there
        timings["ray_start_s"] = time.time() - t
    freeze_driver_heap()  # Ray's own modules and client
    bar = tqdm(total=len(shards), unit="shard", disable=not progress, desc=ctx.recipe.name)
    try:
        services = start_services(ctx.recipe)  # noqa: F841  (held alive while shards run)
        return _dispatch(ctx, plan, queue, early, bar, on_done or (lambda _stats: None))
    except BaseException:
        if started:
            ray_shutdown()
        raise
    finally:
        bar.close()


def _dispatch(
    ctx: BuildContext,
    plan: Plan,
    queue: ShardQueue,
    early: EarlyWorker | None,
    bar: tqdm,
    on_done: Callable[[list[ShardStats]], None],
) -> list[ShardStats]:
    """Submit shards from the queue to Ray, a bounded window at a time, and collect them."""
    import ray

    cfg = ctx.recipe.execution
    task = ray.remote(_run_shards_on_node).options(
        num_cpus=1, max_retries=cfg.retries, retry_exceptions=list(RETRYABLE)
    )
    ctx_ref, plan_ref = ray.put(ctx), ray.put(plan)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    per_task = shards_per_task(cfg, queue.size, cpus)
    # A bounded window of tasks in flight: a continent has too many shards to submit at once;
    # 4 per CPU keep a worker from waiting on the driver between tasks.
    window = max(4, 4 * cpus)
    pending: dict[Any, list[int]] = {}
    results: list[ShardStats] = []
    t0, tiles_done = time.time(), 0
    # An empty task: it returns once a Ray worker has imported the shard code, read the context
    # and opened the sources (``warm_up``). Until then no shard goes to Ray: the early workers
    # take them all from the queue (a shard queued behind the warm-up waited there while they
    # ran out of shards, 0.4-0.7 s with no shard running). Then the window fills and the early
    # workers stop after the shards in hand, so a build uses about the CPUs it was given and
    # the worker's first shard runs at full speed.
    warm = task.remote(ctx_ref, plan_ref, []) if early is not None else None
    while True:
        if warm is None:
            while len(pending) < window and (batch := queue.take_many(per_task)):
                pending[task.remote(ctx_ref, plan_ref, batch)] = batch
        if early is not None and (warm is None or queue.exhausted()):  # Ray is warm, or done
            finished = _stop_early(ctx, plan, early, queue)
            results += finished
            on_done(finished)
            bar.update(len(finished))
            early = warm = None
            continue
        if not pending and early is None:
            return results
        # While the early workers run, the warm-up is polled: they may finish every shard first.
        waiting = [*pending, *([warm] if warm is not None else [])]
        done, _ = ray.wait(waiting, num_returns=1, timeout=None if early is None else 0.1)
        if not done:
            continue
        if done[0] not in pending:  # the empty task: a worker is ready
            warm = None
            continue
        stats = _collect(ctx, plan, pending.pop(done[0]), done[0], queue)
        if any(s.error and DISK_FULL in s.error for s in stats) and queue.close():
            log.error("the disk is full: no new shards are started")
        results += stats
        on_done(stats)
        tiles_done += sum(s.tiles for s in stats)
        bar.set_postfix(tiles_per_s=f"{tiles_done / max(time.time() - t0, 1e-6):.1f}")
        bar.update(len(stats))


def _stop_early(
    ctx: BuildContext, plan: Plan, early: EarlyWorker, queue: ShardQueue
) -> list[ShardStats]:
    """Stop the early workers after their shards in hand; their stats, and failure records
    for the shards that failed deterministically (retryable ones went back to the queue)."""
    finished, failed = early.stop()
    finished += [_failed(ctx, plan, shard, msg) for shard, msg in failed]
    log.info("early workers: %d shards while Ray started", len(finished))
    if any(DISK_FULL in msg for _, msg in failed):
        queue.close()
    return finished
