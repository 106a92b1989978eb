"""The options of the LLM captioner and QA generator, and the backend they run on.

Two backends answer OpenAI-style chat payloads (``chat(payload) -> reply``):

- ``openai``: any OpenAI-compatible endpoint (``openai_client.Endpoint``). Without
  ``base_url``, ``$OPENAI_BASE_URL``; without ``api_key_env``, ``$OPENAI_API_KEY`` when set.
- ``transformers``: a local model folder or GGUF file, run in-process and batched
  (``local_model.py``), or as ``actors`` shared Ray actors asking for ``num_gpus`` each
  (``model_actor.py``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from geoweave.captioning.local_model import ModelSpec, shared_batcher
from geoweave.captioning.model_actor import ActorPool, ray_running
from geoweave.captioning.openai_client import Endpoint, LLMError, reply_text
from geoweave.errors import FatalError

Task = Literal["short", "detailed", "rewrite"]
ALL_TASKS: list[Task] = ["short", "detailed", "rewrite"]


class LLMOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["openai", "transformers"] = "openai"
    model: str | None = Field(
        None, description="the model name the endpoint serves (transformers: model_path's name)"
    )
    base_url: str | None = Field(
        None, description="e.g. http://127.0.0.1:8000/v1; default $OPENAI_BASE_URL"
    )
    api_key_env: str | None = Field(
        None, description="environment variable holding the API key; default OPENAI_API_KEY if set"
    )
    model_path: Path | None = Field(None, description="transformers: a model folder or .gguf")
    device: str = Field("auto", description="transformers: cpu, cuda, cuda:1; auto: cuda if any")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    batch_size: int = Field(8, ge=1, le=512, description="transformers: requests per generate")
    actors: int = Field(0, ge=0, le=256, description="transformers: shared Ray model actors")
    num_gpus: float = Field(0, ge=0, le=16, description="GPUs per model actor")
    tasks: list[Task] = Field(default_factory=lambda: list(ALL_TASKS), min_length=1)
    prompts: dict[Task, str] = Field(
        default_factory=dict, description="task -> prompt name or file"
    )
    temperature: float = Field(0.2, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(96, ge=1, le=4096)
    seed: int | None = 0
    concurrency: int = Field(8, ge=1, le=256, description="requests in flight per worker")
    timeout_s: float = Field(60, gt=0, description="seconds for one request")
    load_timeout_s: float = Field(
        900, gt=0, description="model actors: seconds to wait for the model to load, once"
    )
    retries: int = Field(3, ge=0, le=10)
    fallback: Literal["none", "templates"] = Field(
        "none", description="templates: template text, with a note, when the LLM fails"
    )
    cache_dir: Path | None = Field(None, description="response cache; default $GEOWEAVE_CACHE/llm")

    @model_validator(mode="after")
    def _backend_fields(self) -> LLMOptions:
        if self.backend == "openai" and not self.model:
            raise ValueError("model: the openai backend needs the model name the server serves")
        if self.backend == "transformers" and self.model_path is None:
            raise ValueError("model_path: the transformers backend needs a model folder or .gguf")
        if self.num_gpus and not self.actors:
            raise ValueError("num_gpus: GPUs are given to model actors; set actors: 1 or more")
        return self

    @property
    def model_name(self) -> str:
        """The model recorded with every text and in every cache key."""
        if self.model:
            return self.model
        assert self.model_path is not None
        return self.model_path.stem if self.model_path.suffix == ".gguf" else self.model_path.name

    def spec(self) -> ModelSpec:
        assert self.model_path is not None
        return ModelSpec(self.model_path.expanduser(), self.device, self.dtype, self.batch_size)

    @property
    def uses_ray_services(self) -> bool:
        """Model actors, started by the driver before any shard (``builders/services.py``)."""
        return self.backend == "transformers" and self.actors > 0

    @property
    def service_key(self) -> tuple[ModelSpec, int, float]:
        return (self.spec(), self.actors, self.num_gpus)


class Backend(Protocol):
    where: str  # for messages: the endpoint URL, or the local model

    def chat(self, payload: dict[str, Any]) -> dict[str, Any]: ...

    def preflight(self, model: str) -> None:
        """FatalError, with what to check, when this backend cannot answer."""
        ...


class _Endpoint:
    def __init__(self, opts: LLMOptions) -> None:
        base_url = opts.base_url or os.environ.get("OPENAI_BASE_URL")
        if not base_url:
            raise FatalError(
                "captions.base_url is not set and neither is $OPENAI_BASE_URL: give the "
                "endpoint, e.g. base_url: http://127.0.0.1:8000/v1"
            )
        if opts.api_key_env and not os.environ.get(opts.api_key_env):
            raise FatalError(f"captions.api_key_env names ${opts.api_key_env}, which is not set")
        key_env = opts.api_key_env or (
            "OPENAI_API_KEY" if os.environ.get("OPENAI_API_KEY") else None
        )
        self.endpoint = Endpoint(base_url, key_env, opts.timeout_s, opts.retries)
        self.where = base_url

    def chat(self, payload: dict[str, Any]) -> dict[str, Any]:
        return self.endpoint.chat(payload)

    def preflight(self, model: str) -> None:
        """One tiny request: an unreachable server, an unknown model or a refused key."""
        payload = {"model": model, "max_tokens": 1, "messages": [{"role": "user", "content": "ok"}]}
        try:
            reply_text(self.endpoint.chat(payload))
        except LLMError as e:
            raise FatalError(
                f"the LLM endpoint {self.where} with model {model!r} does not answer: {e}; "
                f"check captions.base_url, captions.model and the key"
            ) from None


class _LocalModel:
    """In this process, or on the shared actors when running on Ray with ``actors``. The model
    loads on the first request, so building a captioner (the driver's preflight) stays cheap."""

    def __init__(self, opts: LLMOptions) -> None:
        self.spec = opts.spec()
        self.spec.check()
        self.opts = opts
        self.pool = (
            ActorPool(self.spec, opts.actors, opts.num_gpus, opts.timeout_s, opts.load_timeout_s)
            if opts.actors and ray_running()
            else None
        )
        self.where = f"the local model {self.spec.path}" + (
            f" on {opts.actors} Ray actor(s)" if self.pool else ""
        )

    def preflight(self, model: str) -> None:
        """The path was checked when this was made; loading waits for the first request (on
        the driver, Ray and its GPUs may not be there yet)."""

    def chat(self, payload: dict[str, Any]) -> dict[str, Any]:
        if self.pool is not None:
            return self.pool.chat(payload)
        return shared_batcher(self.spec).chat(payload)


def make_backend(opts: LLMOptions) -> Backend:
    return _Endpoint(opts) if opts.backend == "openai" else _LocalModel(opts)
