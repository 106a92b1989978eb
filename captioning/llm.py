"""Captions from an LLM behind any OpenAI-compatible chat endpoint (captioner ``llm_v1``).

Per tile: the description JSON (``describe.py``) goes into each task's versioned prompt
(``short`` and ``detailed`` from the description, ``rewrite`` from the detailed caption, as
RSTeller's three tasks). Requests of a batch are sent concurrently (``concurrency`` per
worker). Every response is looked up in, and stored to, the response cache first
(``cache.py``): a rerun or a resumed build pays for no request twice. A request that fails for
good fails its tile (reason ``error``); a server that is down or overloaded after the client's
retries fails the whole shard at once (``ShardError``), which is retried later.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from geoweave.captioning.backends import LLMOptions, make_backend
from geoweave.captioning.cache import Request, ResponseCache
from geoweave.captioning.describe import describe
from geoweave.captioning.model_actor import ActorPool
from geoweave.captioning.openai_client import LLMError, reply_text
from geoweave.captioning.prompts import Prompt, get_prompt
from geoweave.captioning.templates import TemplateCaptioner
from geoweave.errors import FatalError, ShardError
from geoweave.files import default_cache_root
from geoweave.protocols import TileDescription
from geoweave.record import Caption
from geoweave.registry import CAPTIONERS
from geoweave.text import plain_error

log = logging.getLogger("geoweave")
DEFAULT_PROMPTS = {
    "short": "caption_short_v1",
    "detailed": "caption_detailed_v1",
    "rewrite": "caption_rewrite_v1",
}


@CAPTIONERS.add("llm_v1")
class LLMCaptioner:
    name = "llm_v1"
    Options = LLMOptions

    def __init__(self, opts: LLMOptions, seed: int = 0) -> None:
        self.backend = make_backend(opts)
        self.model = opts.model_name
        self.opts = opts
        self.prompts: dict[str, Prompt] = {
            t: get_prompt(opts.prompts.get(t, DEFAULT_PROMPTS[t])) for t in opts.tasks
        }
        if "rewrite" in opts.tasks and "detailed" not in opts.tasks:
            raise FatalError("captions.tasks: rewrite rewrites the detailed caption; add detailed")
        self.params: dict[str, Any] = {
            "temperature": opts.temperature, "top_p": opts.top_p,
            "max_tokens": opts.max_tokens, "seed": opts.seed,
        }  # fmt: skip
        self.cache = ResponseCache((opts.cache_dir or default_cache_root() / "llm").expanduser())
        self.templates = TemplateCaptioner(seed=seed)  # the fallback
        self.requests = 0  # sent to the endpoint (cache misses), for the shard's stats
        self._locks: dict[str, threading.Lock] = {}  # request key -> held while it is asked

    @classmethod
    def from_options(cls, opts: LLMOptions, seed: int = 0) -> LLMCaptioner:
        return cls(opts, seed)

    @staticmethod
    def start_services(opts: LLMOptions) -> ActorPool | None:
        """On the driver, once Ray is up: the model actors (``actors: N``), checked against
        the cluster's resources and started before any shard task."""
        if not opts.uses_ray_services:
            return None
        pool = ActorPool(
            opts.spec(), opts.actors, opts.num_gpus, opts.timeout_s, opts.load_timeout_s
        )
        pool.start()
        return pool

    def preflight(self) -> None:
        """Before any shard starts: an unreachable server, an unknown model, a refused key or
        a model path that is not there stop the build with a clear message."""
        self.backend.preflight(self.model)

    # ---- generation -------------------------------------------------------------------

    def ask(
        self, prompt: Prompt, values: dict[str, str], extra: dict[str, Any] | None = None
    ) -> str:
        """One response to ``prompt`` filled with ``values``: from the cache, else from the
        endpoint (then stored). ``extra`` parameters (a retry's seed, a response format) are
        part of the request and of its cache key."""
        messages = prompt.messages(**values)
        params = {**self.params, **(extra or {})}
        request = Request.of(self.model, prompt.versioned, params, messages)
        # Two tiles of a batch with the same description ask the same thing: one request, and
        # both get its answer (sampling would otherwise give each its own, and the cache one).
        with self._locks.setdefault(request.key, threading.Lock()):
            text = self.cache.get(request)
            if text is None:
                payload = {"model": self.model, "messages": messages, **params}
                reply = self.backend.chat(payload)
                self.requests += 1
                text = reply_text(reply).strip()
                self.cache.put(request, text, reply.get("usage"))
        return text

    def _complete(self, task: str, values: dict[str, str]) -> Caption:
        prompt = self.prompts[task]
        return Caption(
            text=self.ask(prompt, values), style=task, captioner=self.name,
            prompt_version=prompt.versioned, model=self.model,
            params=json.dumps(self.params, sort_keys=True),
        )  # fmt: skip

    def _run(self, jobs: list[tuple[int, str, dict[str, str]]]) -> dict[tuple[int, str], Any]:
        """Each (tile, task, values) concurrently; results or exceptions by (tile, task). A
        server that stays down fails the shard at once (the circuit opens)."""
        out: dict[tuple[int, str], Any] = {}
        with ThreadPoolExecutor(self.opts.concurrency, thread_name_prefix="llm") as pool:
            futures = {(i, t): pool.submit(self._complete, t, v) for i, t, v in jobs}
            for key, future in futures.items():
                try:
                    out[key] = future.result()
                except LLMError as e:
                    if e.retryable:
                        for f in futures.values():
                            f.cancel()
                        raise ShardError(f"the LLM endpoint is unavailable: {e}") from e
                    out[key] = e
        return out

    def caption(self, batch: Sequence[TileDescription]) -> list[list[Caption] | Exception]:
        """Each task's caption per tile; with ``fallback: templates``, a tile whose requests
        failed (or every tile, when the endpoint is down) gets template captions instead,
        each with a ``note`` saying why."""
        try:
            out = self._captions(batch)
        except ShardError as e:
            if self.opts.fallback != "templates":
                raise
            out = [LLMError(str(e), retryable=True)] * len(batch)
        if self.opts.fallback == "templates":
            out = self._fall_back(batch, out)
        return out

    def _captions(self, batch: Sequence[TileDescription]) -> list[list[Caption] | Exception]:
        described = [describe(t).to_json() for t in batch]
        first = [t for t in self.opts.tasks if t != "rewrite"]
        results = self._run(
            [(i, t, {"description": d}) for i, d in enumerate(described) for t in first]
        )
        if "rewrite" in self.opts.tasks:
            again = [
                (i, "rewrite", {"text": json.dumps(r["text"], ensure_ascii=False)})
                for (i, t), r in results.items() if t == "detailed" and not isinstance(r, Exception)
            ]  # fmt: skip
            results.update(self._run(again))
        out: list[list[Caption] | Exception] = []
        for i in range(len(batch)):
            got = [results.get((i, t)) for t in self.opts.tasks]
            failed = [r for r in got if isinstance(r, Exception) or r is None]
            if failed:
                why = plain_error(failed[0]) if failed[0] is not None else "no response"
                out.append(LLMError(f"caption request failed: {why}", retryable=False))
            else:
                out.append([r for r in got if r is not None])
        return out

    def _fall_back(
        self, batch: Sequence[TileDescription], out: list[list[Caption] | Exception]
    ) -> list[list[Caption] | Exception]:
        failed = [i for i, r in enumerate(out) if isinstance(r, Exception)]
        if failed:
            log.warning("%s: %d of %d tiles get template captions: %s", self.name,
                        len(failed), len(out), plain_error(out[failed[0]]))  # type: ignore[arg-type]  # fmt: skip
        for i in failed:
            note = f"{self.name} failed ({plain_error(out[i])}); template captions"  # type: ignore[arg-type]
            out[i] = [Caption(**c, note=note) for c in self.templates.caption_one(batch[i])]  # type: ignore[typeddict-item]
        return out
