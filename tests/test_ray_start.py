"""Stopping a local Ray on a thread while the driver goes on (``RayStopper``), and what the
driver keeps of a failed task (``task_result``)."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator

import pytest

from geoweave.builders.executor import task_result
from geoweave.builders.ray_start import RayStopper, freeze_driver_heap, thaw_driver_heap


def _refs() -> int:
    import ray

    return sum(type(o) is ray.ObjectRef for o in gc.get_objects())  # no attribute lookups


def _get_failed(ref: object) -> str:
    import ray

    try:
        ray.get(ref)
    except ray.exceptions.RayError as e:
        return type(e).__name__
    return "no error"


@pytest.fixture
def local_ray() -> Iterator[None]:
    """A one-CPU Ray in this process, with the cyclic collector off: only the code under test
    may collect."""
    import ray

    ray.init(num_cpus=1, include_dashboard=False, _node_ip_address="127.0.0.2")
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        ray.shutdown()


def test_a_crashed_tasks_reference_is_freed_with_its_error(local_ray: None) -> None:
    """A plain ``ray.get`` of a task whose worker died leaves the task's reference in cyclic
    garbage (the exception's frames hold it). Freed by a collection while Ray shut down on
    the stopper's thread, it made Ray end the driver at once, the build's summary unprinted
    (seen in CI). ``task_result`` frees it at once and returns the error as text."""
    import ray

    crash = ray.remote(max_retries=0)(lambda: os._exit(3))  # the worker dies
    assert _get_failed(crash.remote()) == "WorkerCrashedError"
    assert _refs() == 1  # unreachable, waiting for the collector
    gc.collect()
    outcomes, msg = task_result(crash.remote())
    assert outcomes == [] and msg is not None and "worker" in msg.lower()
    assert _refs() == 0  # nothing left for a collection during the shutdown


def test_stopper_collects_before_ray_stops(local_ray: None) -> None:
    """Any other reference in cyclic garbage is collected by the stopper's thread before it
    shuts Ray down (the caller's collections afterwards find none)."""
    import ray

    holder: list[object] = [ray.put(1)]
    holder.append(holder)  # a reference cycle holding the reference
    del holder
    assert _refs() == 1
    stopper = RayStopper()
    assert stopper.join() > 0 and not ray.is_initialized()
    assert _refs() == 0  # the collector is off here: the stopper collected it


def test_the_driver_heap_is_frozen_for_the_shards_and_thawed_unless_frozen_before() -> None:
    """The executor freezes the driver's heap (the stopper's collection then scans only what
    the shards left); ``build`` thaws it after, but leaves a caller's own freeze alone."""
    assert gc.get_freeze_count() == 0
    kept = [[1], {"a": 2}]  # container objects the freeze takes
    freeze_driver_heap()
    assert gc.get_freeze_count() > 0
    thaw_driver_heap(frozen_before=0)
    assert gc.get_freeze_count() == 0
    gc.freeze()  # the caller's own
    try:
        mine = gc.get_freeze_count()
        freeze_driver_heap()
        thaw_driver_heap(frozen_before=mine)
        assert gc.get_freeze_count() >= mine > 0
    finally:
        gc.unfreeze()
    assert kept
