"""Text quality filters on captions: length bounds (``caption_length_v1``), repeated word
3-grams (``repetition_v1``), non-printable or garbage characters (``garbage_text_v1``).

Each judges the texts of a sample's captions and records one score for the sample (the worst
caption's, or the share that passed); a caption with no text, or a text that is not a string,
is judged as the empty text, so no caption makes a filter fail.

Which captions: by default the length and repetition filters judge only LLM captions (any
captioner but ``template_v1``, including an LLM captioner's template fallback): a template
caption names at most three kinds of feature, each once, so its length is bounded and it
cannot repeat itself by construction. The garbage filter judges every caption: templates write
phrases from tag values, and a label's odd characters (emoji, mojibake) reach them too. The
option ``captions: all | llm`` changes that per filter. A filter that judged no caption of a
sample records no score for it.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Callable
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from geoweave.record import Sample
from geoweave.registry import FILTERS, NoOptions

TEMPLATE_CAPTIONER = "template_v1"
_WORD = re.compile(r"[\w'’-]+")
# Symbols a caption may use besides letters, digits, spaces and punctuation ("37° N", "±5 m").
COMMON_SYMBOLS = frozenset("°+<=>~±×$€£")
_WHITESPACE = frozenset("\t\n\r")


def caption_texts(sample: Sample, which: Literal["all", "llm"]) -> list[str]:
    """The texts of the captions a filter judges (``llm``: not written by ``template_v1``);
    a missing or non-string text is ``""``."""
    out = []
    for cap in sample.captions or []:
        if not isinstance(cap, dict):
            continue
        if which == "llm" and cap.get("captioner") == TEMPLATE_CAPTIONER:
            continue
        text = cap.get("text")
        out.append(text if isinstance(text, str) else "")
    return out


class CaptionLengthOptions(NoOptions):
    min_words: int = Field(3, ge=1, description="fewer words is too short")
    max_words: int = Field(120, ge=1, description="more words is too long")
    action: Literal["flag", "reject"] = Field(
        "flag", description="flag: score only; reject: reject a sample with a caption out of bounds"
    )
    captions: Literal["all", "llm"] = Field("llm", description="which captions to judge")

    @model_validator(mode="after")
    def _bounds(self) -> CaptionLengthOptions:
        if self.min_words > self.max_words:
            raise ValueError(f"min_words ({self.min_words}) > max_words ({self.max_words})")
        return self


@FILTERS.add("caption_length_v1")
class CaptionLengthFilter:
    """Captions of ``min_words`` to ``max_words`` words (split on whitespace); score
    ``caption_length_ok``: the share of judged captions within the bounds."""

    name = "caption_length_v1"
    stage: ClassVar[Literal["image", "text"]] = "text"
    Options = CaptionLengthOptions

    def __init__(self, opts: CaptionLengthOptions) -> None:
        self.opts = opts

    def check(self, sample: Sample) -> str | None:
        texts = caption_texts(sample, self.opts.captions)
        if not texts:
            return None
        ok = [self.opts.min_words <= len(t.split()) <= self.opts.max_words for t in texts]
        sample.scores["caption_length_ok"] = round(sum(ok) / len(ok), 4)
        return "caption_length" if self.opts.action == "reject" and not all(ok) else None


def repeated_share(text: str, n: int = 3) -> float:
    """The share of a text's word n-grams (lower case, punctuation dropped) that occur more
    than once in it: "a single-storyland building, with a single-storyland building" has 5
    3-grams, 2 of them the same one, so 0.4. A text of fewer than n words scores 0."""
    words = _WORD.findall(text.lower())
    grams = list(zip(*(words[i:] for i in range(n)), strict=False))
    if not grams:
        return 0.0
    counts = Counter(grams)
    return sum(c for c in counts.values() if c > 1) / len(grams)


class RepetitionOptions(NoOptions):
    max_repeated: float = Field(
        0.3, ge=0, le=1, description="reject above this share of repeated word 3-grams"
    )
    captions: Literal["all", "llm"] = Field("llm", description="which captions to judge")


@FILTERS.add("repetition_v1")
class RepetitionFilter:
    """Degenerate, looping text; score ``repetition``: the worst caption's repeated share."""

    name = "repetition_v1"
    stage: ClassVar[Literal["image", "text"]] = "text"
    Options = RepetitionOptions

    def __init__(self, opts: RepetitionOptions) -> None:
        self.opts = opts

    def check(self, sample: Sample) -> str | None:
        texts = caption_texts(sample, self.opts.captions)
        if not texts:
            return None
        worst = max(repeated_share(t) for t in texts)
        sample.scores["repetition"] = round(worst, 4)
        return "repetitive_text" if worst > self.opts.max_repeated else None


def is_control(ch: str) -> bool:
    """Non-printable: a control, format, surrogate, private-use or unassigned code point
    (Unicode category C*), but not a tab or a line break."""
    return ch not in _WHITESPACE and unicodedata.category(ch)[0] == "C"


def is_garbage(ch: str) -> bool:
    """Not a letter (with its marks), digit, space, punctuation or common symbol."""
    cat = unicodedata.category(ch)
    return cat[0] not in "LMNPZ" and ch not in _WHITESPACE and ch not in COMMON_SYMBOLS


def _ascii_bytes(test: Callable[[str], bool]) -> bytes:
    return bytes(b for b in range(128) if not test(chr(b)))


# ASCII text (every template caption, most model output) is classified by byte deletion in C:
# what is left after deleting the good bytes is the garbage (or the non-printable).
_NOT_GARBAGE = _ascii_bytes(is_garbage)
_NOT_CONTROL = _ascii_bytes(is_control)


def garbage_share(text: str) -> tuple[float, bool]:
    """(the share of characters that are garbage, whether any is non-printable)."""
    if not text:
        return 0.0, False
    if text.isascii():
        raw = text.encode("ascii")
        bad = len(raw.translate(None, _NOT_GARBAGE))
        return bad / len(text), bool(raw.translate(None, _NOT_CONTROL))
    bad = sum(map(is_garbage, text))
    return bad / len(text), any(map(is_control, text))


class GarbageOptions(NoOptions):
    max_share: float = Field(
        0.1, ge=0, le=1, description="reject above this share of garbage characters"
    )
    captions: Literal["all", "llm"] = Field("all", description="which captions to judge")


@FILTERS.add("garbage_text_v1")
class GarbageTextFilter:
    """Mojibake (U+FFFD), emoji and other symbols, and control characters; score ``garbage``: the
    worst caption's share of garbage characters (non-printable ones included)."""

    name = "garbage_text_v1"
    stage: ClassVar[Literal["image", "text"]] = "text"
    Options = GarbageOptions

    def __init__(self, opts: GarbageOptions) -> None:
        self.opts = opts

    def check(self, sample: Sample) -> str | None:
        texts = caption_texts(sample, self.opts.captions)
        if not texts:
            return None
        results = [garbage_share(t) for t in texts]
        worst = max(share for share, _ in results)
        sample.scores["garbage"] = round(worst, 4)
        if worst > self.opts.max_share or any(control for _, control in results):
            return "garbage_text"
        return None
