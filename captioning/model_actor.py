"""The in-process model as Ray actors: ``actors`` copies of one model, each asking for
``num_gpus``, shared by every shard worker of the build, while the CPU workers keep reading
pixels.

Each actor is a threaded actor holding a ``Batcher``: concurrent ``chat`` calls from all
workers batch together on its device. Actors are named after the model spec, so the first
worker that needs one creates it and the others find it (``get_if_exists``); an actor that
died (its node lost, its owner gone) is created again on the next call. Outside Ray (the early
worker, a test that runs a shard in-process) the model loads in the calling process instead.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
from typing import Any

from geoweave.captioning.local_model import ModelSpec, shared_batcher
from geoweave.captioning.openai_client import LLMError
from geoweave.errors import FatalError


class _ModelActor:
    def __init__(self, spec: ModelSpec) -> None:
        self.batcher = shared_batcher(spec)

    def chat(self, payload: dict[str, Any]) -> dict[str, Any]:
        return self.batcher.chat(payload)

    def batches(self) -> int:
        return self.batcher.batches

    def ready(self) -> bool:
        """Answers once ``__init__`` (the model's load) is done."""
        return True

    def resources(self) -> dict[str, float]:
        """What Ray gave this actor (``{"GPU": 1.0}`` with ``num_gpus: 1``)."""
        import ray

        return dict(ray.get_runtime_context().get_assigned_resources())


def actor_name(spec: ModelSpec, i: int) -> str:
    digest = hashlib.sha256(repr(spec).encode()).hexdigest()[:12]
    return f"geoweave-llm-{digest}-{i}"


class ActorPool:
    """``chat`` on one of ``n`` named model actors, round robin.

    ``timeout_s`` bounds one request; the model's load (the actor's process start, imports and
    weights: minutes for a large model) is waited for first, once per actor and process, for
    up to ``load_timeout_s``, so a request is never timed out by the load ahead of it."""

    def __init__(
        self, spec: ModelSpec, n: int, num_gpus: float, timeout_s: float, load_timeout_s: float
    ) -> None:
        self.spec, self.n, self.num_gpus, self.timeout_s = spec, n, num_gpus, timeout_s
        self.load_timeout_s = load_timeout_s
        self._next = itertools.count()
        self._lock = threading.Lock()
        self._handles: dict[int, Any] = {}
        self._ready: set[int] = set()  # actors seen loaded by this process

    def _handle(self, i: int, fresh: bool = False) -> Any:
        import ray

        with self._lock:
            if fresh or i not in self._handles:
                cls = ray.remote(_ModelActor).options(
                    name=actor_name(self.spec, i),
                    get_if_exists=True,
                    num_gpus=self.num_gpus,
                    num_cpus=0 if self.num_gpus else 1,  # a CPU model holds a CPU for itself
                    max_concurrency=max(8, self.spec.batch_size * 4),
                )
                self._handles[i] = cls.remote(self.spec)
                self._ready.discard(i)
            return self._handles[i]

    def _wait_loaded(self, i: int, handle: Any) -> None:
        """Block until actor ``i`` has loaded its model (once per actor and process)."""
        import ray
        from ray.exceptions import GetTimeoutError

        if i in self._ready:
            return
        try:
            ray.get(handle.ready.remote(), timeout=self.load_timeout_s)
        except GetTimeoutError:
            raise LLMError(
                f"the model actor {actor_name(self.spec, i)} did not load {self.spec.path} in "
                f"{self.load_timeout_s:g} s (captions.load_timeout_s)",
                retryable=True,  # the service is down: the shard fails, to be retried later
            ) from None
        self._ready.add(i)

    def start(self) -> None:
        """Check that the cluster can hold the actors, then create them (the driver does
        this before any shard task, so the tasks cannot hold every CPU first)."""
        import ray

        self.spec.check()
        have = ray.cluster_resources()
        if self.num_gpus:
            need, kind, short = self.n * self.num_gpus, "GPU", "num_gpus"
            enough = have.get("GPU", 0) >= need
        else:  # one CPU each, and at least one left for the shard tasks
            need, kind, short = self.n, "CPU", "actors"
            enough = have.get("CPU", 0) >= need + 1
        if not enough:
            raise FatalError(
                f"captions.{short}: {self.n} model actor(s) need {need:g} {kind} "
                f"(and on CPU one more for the shard tasks); the Ray cluster has "
                f"{have.get(kind, 0):g} (`ray status` lists its resources)"
            )
        for i in range(self.n):
            self._handle(i)

    def chat(self, payload: dict[str, Any]) -> dict[str, Any]:
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

        i = next(self._next) % self.n
        for attempt in range(2):
            try:
                handle = self._handle(i, fresh=attempt > 0)
                self._wait_loaded(i, handle)
                reply: dict[str, Any] = ray.get(handle.chat.remote(payload), timeout=self.timeout_s)
                return reply
            except RayActorError as e:  # died: its node was lost; make it again, once
                why = f"the model actor {actor_name(self.spec, i)} died: {e}"
            except RayTaskError as e:  # the model failed on this request
                raise LLMError(f"the model actor failed: {e.cause}", retryable=False) from None
            except GetTimeoutError:
                raise LLMError(
                    f"the model actor gave no answer in {self.timeout_s:g} s (captions.timeout_s)",
                    retryable=False,
                ) from None
        raise LLMError(why, retryable=True)

    def batches(self) -> list[int]:
        """Each actor's generate calls so far (for tests and the benchmark)."""
        import ray

        return [int(ray.get(self._handle(i).batches.remote())) for i in range(self.n)]


def ray_running() -> bool:
    try:
        import ray
    except ImportError:
        return False
    return bool(ray.is_initialized())
