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
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from geoweave.captioning.cache import Request, ResponseCache
from geoweave.captioning.describe import describe
from geoweave.captioning.openai_client import Endpoint, LLMError, reply_text
from geoweave.captioning.prompts import Prompt, get_prompt
from geoweave.errors import FatalError, ShardError
from geoweave.files import default_cache_root
from geoweave.protocols import TileDescription
from geoweave.record import Caption
from geoweave.registry import CAPTIONERS
from geoweave.text import plain_error

Task = Literal["short", "detailed", "rewrite"]
ALL_TASKS: list[Task] = ["short", "detailed", "rewrite"]
DEFAULT_PROMPTS = {
    "short": "caption_short_v1",
    "detailed": "caption_detailed_v1",
    "rewrite": "caption_rewrite_v1",
}


class LLMOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(description="the model name the endpoint serves")
    base_url: str | None = Field(
        None, description="e.g. http://127.0.0.1:8000/v1; default $OPENAI_BASE_URL"
    )
    api_key_env: str | None = Field(
        None, description="environment variable holding the API key; default OPENAI_API_KEY if set"
    )
    tasks: list[Task] = Field(default_factory=lambda: list(ALL_TASKS), min_length=1)
    prompts: dict[Task, str] = Field(
        default_factory=dict, description="task -> prompt name or file"
    )
    temperature: float = Field(0.2, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(96, ge=1, le=4096)
    seed: int | None = 0
    concurrency: int = Field(8, ge=1, le=256, description="requests in flight per worker")
    timeout_s: float = Field(60, gt=0)
    retries: int = Field(3, ge=0, le=10)
    cache_dir: Path | None = Field(None, description="response cache; default $GEOWEAVE_CACHE/llm")


@CAPTIONERS.add("llm_v1")
class LLMCaptioner:
    name = "llm_v1"
    Options = LLMOptions

    def __init__(self, opts: LLMOptions, seed: int = 0) -> None:
        base_url = opts.base_url or os.environ.get("OPENAI_BASE_URL")
        if not base_url:
            raise FatalError(
                "captions.base_url is not set and neither is $OPENAI_BASE_URL: give the "
                "endpoint, e.g. base_url: http://127.0.0.1:8000/v1"
            )
        key_env = opts.api_key_env or (
            "OPENAI_API_KEY" if os.environ.get("OPENAI_API_KEY") else None
        )
        if opts.api_key_env and not os.environ.get(opts.api_key_env):
            raise FatalError(f"captions.api_key_env names ${opts.api_key_env}, which is not set")
        self.endpoint = Endpoint(base_url, key_env, opts.timeout_s, opts.retries)
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
        self.requests = 0  # sent to the endpoint (cache misses), for the shard's stats
        self._locks: dict[str, threading.Lock] = {}  # request key -> held while it is asked

    @classmethod
    def from_options(cls, opts: LLMOptions, seed: int = 0) -> LLMCaptioner:
        return cls(opts, seed)

    def preflight(self) -> None:
        """One tiny request before any shard starts: unreachable server, unknown model or a
        refused key stop the build with a clear message."""
        payload = {"model": self.opts.model, "max_tokens": 1,
                   "messages": [{"role": "user", "content": "ok"}]}  # fmt: skip
        try:
            reply_text(self.endpoint.chat(payload))
        except LLMError as e:
            raise FatalError(
                f"the LLM endpoint {self.endpoint.base_url} with model {self.opts.model!r} "
                f"does not answer: {e}; check captions.base_url, captions.model and the key"
            ) from None

    # ---- generation -------------------------------------------------------------------

    def ask(
        self, prompt: Prompt, values: dict[str, str], extra: dict[str, Any] | None = None
    ) -> str:
        """One response to ``prompt`` filled with ``values``: from the cache, else from the
        endpoint (then stored). ``extra`` parameters (a retry's seed, a response format) are
        part of the request and of its cache key."""
        messages = prompt.messages(**values)
        params = {**self.params, **(extra or {})}
        request = Request.of(self.opts.model, prompt.versioned, params, messages)
        # Two tiles of a batch with the same description ask the same thing: one request, and
        # both get its answer (sampling would otherwise give each its own, and the cache one).
        with self._locks.setdefault(request.key, threading.Lock()):
            text = self.cache.get(request)
            if text is None:
                payload = {"model": self.opts.model, "messages": messages, **params}
                reply = self.endpoint.chat(payload)
                self.requests += 1
                text = reply_text(reply).strip()
                self.cache.put(request, text, reply.get("usage"))
        return text

    def _complete(self, task: str, values: dict[str, str]) -> Caption:
        prompt = self.prompts[task]
        return Caption(
            text=self.ask(prompt, values), style=task, captioner=self.name,
            prompt_version=prompt.versioned, model=self.opts.model,
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
