"""Check LLM question-answer pairs against the labels (text filter ``qa_check_v1``).

Three kinds of question can be checked, the rest are marked ``unchecked``:

- presence, "Is there a parking lot ...?": the answer's yes or no against whether the labels
  support the phrase (the faithfulness vocabulary and its broader concepts);
- counts, "How many buildings ...?": the answer's first number (digits or one to twenty)
  against the number of visible elements of that concept;
- land cover, any question about the land cover: the answer must name the tile's dominant
  class (or a synonym).

A pair is ``verified`` only when its check passed; ``check`` says which one ran. Template
pairs are computed from the labels and left as they are. The sample's ``qa_verified`` score is
the share of its LLM pairs that passed. The filter never rejects.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import ClassVar, Literal

from geoweave.qa.faithfulness import (
    broader,
    concept,
    label_concepts,
    mentions,
    supported_concepts,
)
from geoweave.record import QAPair, Sample
from geoweave.registry import FILTERS, NoOptions
from geoweave.sources.phrases import element_phrase

_PRESENCE = re.compile(r"^(?:is|are) there\b(.*)")
_COUNT = re.compile(r"^how many\b(.*)")
_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen "
    "fourteen fifteen sixteen seventeen eighteen nineteen twenty"
)
_NUMBERS = {w: i for i, w in enumerate(_WORDS.split(" "))}


def _yes_no(answer: str) -> bool | None:
    first = re.findall(r"[a-z]+", answer.lower())[:1]
    return {"yes": True, "no": False}.get(first[0]) if first else None


def _number(answer: str) -> int | None:
    for token in re.findall(r"\d+|[a-z]+", answer.lower()):
        if token.isdigit():
            return int(token)
        if token in _NUMBERS:
            return _NUMBERS[token]
    return None


def check_pair(
    pair: QAPair, sample: Sample, labels: Mapping[str, frozenset[str]]
) -> tuple[str, bool]:
    """(the check that ran, whether the answer passed it); ``labels`` is the sample's
    ``label_concepts``."""
    q = " ".join(pair["question"].lower().split())
    supported = supported_concepts(labels)
    if "land cover" in q and sample.landcover:
        top = max(sample.landcover.items(), key=lambda kv: kv[1])[0]
        said = {concept(m) for m in mentions(pair["answer"])}
        return "land_cover", bool(said & broader(top))
    if m := _PRESENCE.match(q):
        found, yes = mentions(m.group(1), own=list(labels)), _yes_no(pair["answer"])
        if found and yes is not None:
            return "presence", yes == (concept(found[0]) in supported)
    if m := _COUNT.match(q):
        found, n = mentions(m.group(1), own=list(labels)), _number(pair["answer"])
        if found and n is not None:
            target = concept(found[0])
            count = sum(
                1 for el in sample.osm if (p := element_phrase(el["tags"])) and target in broader(p)
            )
            return "count", n == count
    return "unchecked", False


@FILTERS.add("qa_check_v1")
class QACheckFilter:
    name = "qa_check_v1"
    stage: ClassVar[Literal["image", "text"]] = "text"
    Options = NoOptions

    def __init__(self, opts: NoOptions) -> None:
        pass

    def check(self, sample: Sample) -> str | None:
        llm = [p for p in sample.qa if p["kind"] == "llm"]
        labels = label_concepts(sample.osm, sample.landcover) if llm else {}
        for pair in llm:
            pair["check"], pair["verified"] = check_pair(pair, sample, labels)
        if llm:
            sample.scores["qa_verified"] = round(sum(p["verified"] for p in llm) / len(llm), 4)
        return None
