"""The in-process LLM backend: a ``transformers`` causal LM from a local model folder or GGUF
file, generating for batches of chat requests.

``Batcher.chat`` has the shape of ``Endpoint.chat`` (an OpenAI-style payload in, an
OpenAI-style reply out), so the captioner and the QA generator use either backend unchanged.
Many threads call it at once (the captioner's ``concurrency``); one generation thread takes
what is waiting, up to ``batch_size`` requests with the same generation parameters, and runs
them as one left-padded ``generate``. A model is loaded once per process (``shared_batcher``),
however many shards or components use it. No download ever: the path must be local.

Sampling (``temperature > 0``) is seeded per batch, so a sampled text depends on which
requests shared its batch; use ``temperature: 0`` (greedy) for texts that do not. The
response cache makes a rerun reproducible either way.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geoweave.captioning.openai_client import LLMError
from geoweave.errors import FatalError

log = logging.getLogger("geoweave")


@dataclass(frozen=True)
class ModelSpec:
    """What to load: a model folder (``config.json``, safetensors) or one ``.gguf`` file."""

    path: Path
    device: str = "auto"  # auto: cuda when torch sees a GPU, else cpu
    dtype: str = "auto"  # auto: the checkpoint's own; float32 on a CPU without bf16 units
    batch_size: int = 8

    def check(self) -> None:
        """A clear error for a path that cannot be a local model, before anything loads."""
        p = self.path
        if p.is_file() and p.suffix == ".gguf":
            return
        if p.is_dir() and (p / "config.json").is_file():
            return
        what = "does not exist" if not p.exists() else "is neither a model folder nor a .gguf"
        raise FatalError(
            f"captions.model_path {p} {what}: give a local transformers model folder (with "
            f"config.json) or a .gguf file"
        )


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX; Linux's flags)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


def load(spec: ModelSpec) -> tuple[Any, Any, str]:
    """(tokenizer, model, device) for ``spec``, in eval mode, offline."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the build has its own progress
    device = spec.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16,
             "float16": torch.float16}[spec.dtype]  # fmt: skip
    if dtype == "auto" and device == "cpu" and not cpu_has_bf16():
        # a bfloat16 checkpoint on a CPU without bf16 units generates 4x slower than the same
        # weights as float32 (SmolLM2-135M, AVX2-only EPYC: 23 s against 5.7 s); on one with
        # them bfloat16 was the faster (3.85 captions/s against 1.42 at batch 16)
        dtype = torch.float32
    kw: dict[str, Any] = {"local_files_only": True}
    folder = spec.path
    if spec.path.suffix == ".gguf":
        folder = spec.path.parent
        kw |= {"gguf_file": spec.path.name}
    tokenizer = AutoTokenizer.from_pretrained(folder, padding_side="left", **kw)
    if spec.path.suffix == ".gguf":
        kw["quantization_config"] = GgufConfig(dequantize=True)
    model: Any = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, **kw)
    model = model.to(device).eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, model, device


def _group_key(payload: dict[str, Any]) -> tuple[Any, ...]:
    """Requests generate together only with the same generation parameters."""
    return tuple(payload.get(k) for k in ("temperature", "top_p", "max_tokens", "seed"))


@dataclass
class _Waiting:
    payload: dict[str, Any]
    done: threading.Event = field(default_factory=threading.Event)
    reply: dict[str, Any] | None = None
    error: Exception | None = None


class Batcher:
    """Batched generation for chat payloads arriving from many threads."""

    def __init__(self, spec: ModelSpec, wait_s: float = 0.01) -> None:
        self.spec = spec
        self.wait_s = wait_s  # how long the first request waits for company
        self.tokenizer, self.model, self.device = load(spec)
        self.batches = 0  # generate calls, for tests and the benchmark
        self._queue: queue.Queue[_Waiting] = queue.Queue()
        threading.Thread(target=self._loop, name="llm-generate", daemon=True).start()

    def chat(self, payload: dict[str, Any]) -> dict[str, Any]:
        """One request's reply, generated in a batch with whatever else is waiting."""
        item = _Waiting(payload)
        self._queue.put(item)
        item.done.wait()
        if item.error is not None:
            raise item.error
        assert item.reply is not None
        return item.reply

    def _take(self) -> list[_Waiting]:
        items = [self._queue.get()]
        deadline = time.monotonic() + self.wait_s
        while len(items) < self.spec.batch_size * 4:
            try:
                items.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        return items

    def _loop(self) -> None:
        while True:
            groups: dict[tuple[Any, ...], list[_Waiting]] = {}
            for item in self._take():
                groups.setdefault(_group_key(item.payload), []).append(item)
            for items in groups.values():
                for i in range(0, len(items), self.spec.batch_size):
                    self._run(items[i : i + self.spec.batch_size])

    def _run(self, items: list[_Waiting]) -> None:
        try:
            replies = self.generate([it.payload for it in items])
        except Exception as e:  # one failed batch fails its own requests, not the process
            log.warning("local model: a batch of %d failed: %s", len(items), e)
            for it in items:
                it.error = LLMError(f"the local model failed: {e}", retryable=False)
                it.done.set()
            return
        for it, reply in zip(items, replies, strict=True):
            it.reply = reply
            it.done.set()

    def generate(self, payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One ``generate`` over payloads that share their generation parameters."""
        import torch

        p = payloads[0]
        texts = [
            self.tokenizer.apply_chat_template(
                q["messages"], add_generation_prompt=True, tokenize=False
            )
            for q in payloads
        ]
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v.to(self.device) for k, v in enc.items()}
        temperature = float(p.get("temperature") or 0.0)
        gen: dict[str, Any] = {"max_new_tokens": int(p.get("max_tokens") or 128),
                               "pad_token_id": self.tokenizer.pad_token_id,
                               "do_sample": temperature > 0}  # fmt: skip
        if temperature > 0:
            gen |= {"temperature": temperature, "top_p": float(p.get("top_p") or 1.0)}
            torch.manual_seed(int(p.get("seed") or 0))
        else:
            gen |= {"temperature": None, "top_p": None, "top_k": None}
        with torch.inference_mode():
            out = self.model.generate(**enc, **gen)
        self.batches += 1
        new = out[:, enc["input_ids"].shape[1] :]
        prompt_tokens = enc["attention_mask"].sum(dim=1).tolist()
        return [self._reply(row, n) for row, n in zip(new, prompt_tokens, strict=True)]

    def _reply(self, row: Any, prompt_tokens: int) -> dict[str, Any]:
        ids = row.tolist()
        eos = self.model.generation_config.eos_token_id
        stops = set(eos if isinstance(eos, list) else [eos]) | {self.tokenizer.pad_token_id}
        n = next((i for i, t in enumerate(ids) if t in stops), len(ids))
        text = self.tokenizer.decode(ids[:n], skip_special_tokens=True)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": n}
        return {"choices": [{"message": {"role": "assistant", "content": text}}], "usage": usage}


_SHARED: dict[ModelSpec, Batcher] = {}
_SHARED_LOCK = threading.Lock()


def shared_batcher(spec: ModelSpec) -> Batcher:
    """The process's one ``Batcher`` for ``spec`` (loaded on first use)."""
    with _SHARED_LOCK:
        if spec not in _SHARED:
            spec.check()
            t = time.perf_counter()
            _SHARED[spec] = Batcher(spec)
            log.info("local model %s loaded in %.1f s", spec.path, time.perf_counter() - t)
        return _SHARED[spec]
