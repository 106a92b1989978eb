"""Stopping a local Ray on a thread while the driver goes on (``RayStopper``)."""

from __future__ import annotations

import gc
import os

from geoweave.builders.ray_start import RayStopper


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


def test_stopper_frees_a_crashed_tasks_reference_before_ray_stops() -> None:
    """A ``ray.get`` of a task whose worker died leaves the task's reference in cyclic
    garbage. Freed by a collection while Ray shuts down on the stopper's thread, it made Ray
    end the driver at once (the build's summary lost, seen in CI): the stopper collects
    first, on the caller's thread."""
    import ray

    ray.init(num_cpus=1, include_dashboard=False, _node_ip_address="127.0.0.2")
    gc.disable()  # only the stopper may collect here
    try:
        crash = ray.remote(max_retries=0)(lambda: os._exit(3))
        assert _get_failed(crash.remote()) == "WorkerCrashedError"
        assert _refs() == 1  # unreachable, waiting for the collector
        stopper = RayStopper()
        assert _refs() == 0  # freed before the shutdown thread started
        assert stopper.join() > 0 and not ray.is_initialized()
    finally:
        gc.enable()
        ray.shutdown()
