"""Question-answer pairs from an LLM (question generator ``llm_qa_v1``), validated on the client.

The ``qa_v1`` prompt asks for a JSON list of ``{"question", "answer"}`` objects; the server is
sent a JSON schema as ``response_format`` when ``response_format: true`` (vLLM and llama.cpp
honour it; ``transformers serve`` accepts and ignores it), and the reply is always validated
here. A reply that is not such a list is asked again with another seed, ``attempts`` times in
all; then the tile gets template QA pairs (``template_qa_v1``) whose ``note`` says why. Every
LLM pair records the generator, prompt version and model, and ``verified: false`` (checking
answers against the labels is a judge's work, in ``qa/``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import Field

from geoweave.captioning.backends import LLMOptions
from geoweave.captioning.describe import describe
from geoweave.captioning.llm import LLMCaptioner
from geoweave.captioning.openai_client import LLMError
from geoweave.captioning.prompts import get_prompt
from geoweave.captioning.questions import TemplateQA, TemplateQAOptions
from geoweave.errors import ShardError
from geoweave.protocols import TileDescription
from geoweave.record import QAPair
from geoweave.registry import QUESTION_GENERATORS
from geoweave.text import plain_error

SCHEMA = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {"question": {"type": "string"}, "answer": {"type": "string"}},
        "required": ["question", "answer"],
    },
}


class LLMQAOptions(LLMOptions):
    per_sample: int = Field(4, ge=1, le=20, description="question-answer pairs per tile")
    prompt: str = Field("qa_v1", description="a shipped prompt or a prompt file (task qa)")
    attempts: int = Field(3, ge=1, le=10, description="tries for a valid JSON reply")
    response_format: bool = Field(True, description="send the JSON schema as response_format")
    max_tokens: int = Field(256, ge=1, le=4096)


def parse_pairs(text: str, n: int) -> list[tuple[str, str]]:
    """The first ``n`` (question, answer) pairs of a reply; ValueError unless it holds a JSON
    list of objects with non-empty string ``question`` and ``answer`` (text around the list,
    such as a code fence, is allowed)."""
    start, end = text.find("["), text.rfind("]")
    if start < 0 or end <= start:
        raise ValueError("no JSON list in the reply")
    data = json.loads(text[start : end + 1])
    pairs = []
    for item in data if isinstance(data, list) else []:
        q, a = (item.get("question"), item.get("answer")) if isinstance(item, dict) else (0, 0)
        if not (isinstance(q, str) and isinstance(a, str) and q.strip() and a.strip()):
            raise ValueError(f"not a question-answer object: {str(item)[:80]}")
        pairs.append((" ".join(q.split()), " ".join(a.split())))
    if not pairs:
        raise ValueError("an empty list")
    return pairs[:n]


@QUESTION_GENERATORS.add("llm_qa_v1")
class LLMQuestions(LLMCaptioner):
    """Shares the captioner's endpoint, cache, retries and preflight; asks the ``qa`` prompt."""

    name = "llm_qa_v1"
    Options = LLMQAOptions

    def __init__(self, opts: LLMQAOptions, seed: int = 0) -> None:
        super().__init__(opts, seed)
        self.qa_opts = opts
        self.qa_prompt = get_prompt(opts.prompt)
        self.template_qa = TemplateQA(TemplateQAOptions(per_sample=opts.per_sample), seed)

    @classmethod
    def from_options(cls, opts: LLMQAOptions, seed: int = 0) -> LLMQuestions:
        return cls(opts, seed)

    def _pairs(self, tile: TileDescription) -> list[QAPair]:
        values = {"description": describe(tile).to_json(), "n": str(self.qa_opts.per_sample)}
        why = ""
        for attempt in range(self.qa_opts.attempts):
            extra: dict[str, Any] = {"seed": (self.qa_opts.seed or 0) + attempt}
            if self.qa_opts.response_format:
                extra["response_format"] = {"type": "json_schema",
                                            "json_schema": {"name": "qa_pairs", "schema": SCHEMA}}  # fmt: skip
            text = self.ask(self.qa_prompt, values, extra)
            try:
                pairs = parse_pairs(text, self.qa_opts.per_sample)
            except ValueError as e:
                why = str(e)
                continue
            return [
                QAPair(question=q, answer=a, kind="llm", verified=False, generator=self.name,
                       prompt_version=self.qa_prompt.versioned, model=self.opts.model)
                for q, a in pairs
            ]  # fmt: skip
        note = (
            f"llm_qa_v1: no valid JSON after {self.qa_opts.attempts} attempts ({why}); template QA"
        )
        return self._templates(tile, note)

    def _templates(self, tile: TileDescription, note: str) -> list[QAPair]:
        return [QAPair(**p, note=note) for p in self.template_qa.questions_one(tile)]  # type: ignore[typeddict-item]

    def questions(self, batch: Sequence[TileDescription]) -> list[list[QAPair] | Exception]:
        """Pairs per tile; with ``fallback: templates``, template pairs (with a ``note``) for a
        tile whose requests failed, or for every tile when the endpoint is down."""
        out: list[list[QAPair] | Exception] = []
        with ThreadPoolExecutor(self.opts.concurrency, thread_name_prefix="llm-qa") as pool:
            futures = [pool.submit(self._pairs, t) for t in batch]
            for f in futures:
                try:
                    out.append(f.result())
                except LLMError as e:
                    if e.retryable and self.opts.fallback != "templates":
                        for other in futures:
                            other.cancel()
                        raise ShardError(f"the LLM endpoint is unavailable: {e}") from e
                    out.append(e)
        if self.opts.fallback == "templates":
            for i, r in enumerate(out):
                if isinstance(r, Exception):
                    note = f"{self.name} failed ({plain_error(r)}); template QA"
                    out[i] = self._templates(batch[i], note)
        return out
