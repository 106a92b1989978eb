"""Template question-answer pairs whose answers are computed from the joined labels."""

from __future__ import annotations

import random
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from geoweave.captioning.templates import describe_counts
from geoweave.protocols import TileDescription
from geoweave.record import LabelElement, QAPair
from geoweave.registry import QUESTION_GENERATORS
from geoweave.sources.phrases import a, element_phrase, plural

# Phrases asked about when absent, for "no" answers; common in OSM, all visible from above.
ABSENT_CANDIDATES = (
    "building", "residential road", "body of water", "parking lot", "park", "railway line",
    "sports pitch", "footpath", "forest", "farmland",
)  # fmt: skip


class TemplateQAOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    per_sample: int = Field(4, ge=0, le=20, description="question-answer pairs per tile")


@QUESTION_GENERATORS.add("template_qa_v1")
class TemplateQA:
    """Presence (yes/no), count, dominant land cover and relative position questions."""

    name = "template_qa_v1"
    Options = TemplateQAOptions

    def __init__(self, opts: TemplateQAOptions | None = None, seed: int = 0) -> None:
        self.seed, self.per_sample = seed, (opts or TemplateQAOptions()).per_sample

    def questions(self, batch: Sequence[TileDescription]) -> list[list[QAPair] | Exception]:
        return [self.questions_one(tile) for tile in batch]

    def questions_one(self, sample: TileDescription) -> list[QAPair]:
        rng = random.Random(f"{self.seed}|qa|{sample.key}")
        pairs = self._presence(sample, rng) + self._counts(sample) + self._position(sample)
        pairs += self._landcover(sample)
        rng.shuffle(pairs)
        return pairs[: self.per_sample]

    def _presence(self, sample: TileDescription, rng: random.Random) -> list[QAPair]:
        present = {p for e in sample.elements if (p := element_phrase(e["tags"]))}
        out = []
        if present:
            p = rng.choice(sorted(present))
            out.append(_qa(f"Is there {a(p)} in this image?", "yes", "presence"))
        absent = [c for c in ABSENT_CANDIDATES if c not in present]
        if absent:
            out.append(_qa(f"Is there {a(rng.choice(absent))} in this image?", "no", "presence"))
        return out

    def _counts(self, sample: TileDescription) -> list[QAPair]:
        return [
            _qa(f"How many {plural(p, 2)} are visible, at least in part?", str(n), "count")
            for p, n, countable in describe_counts(sample, limit=3)
            if countable
        ][:2]

    def _position(self, sample: TileDescription) -> list[QAPair]:
        by_phrase: dict[str, list[LabelElement]] = {}
        for e in sample.elements:
            p = element_phrase(e["tags"])
            if p:
                by_phrase.setdefault(p, []).append(e)
        for p, els in sorted(by_phrase.items()):
            if len(els) == 1:
                return [_qa(f"Where in the image is the {p}?", els[0]["position"], "position")]
        return []

    def _landcover(self, sample: TileDescription) -> list[QAPair]:
        if not sample.landcover:
            return []
        name = max(sample.landcover.items(), key=lambda kv: kv[1])[0]
        return [_qa("What is the dominant land cover?", name, "landcover")]


def _qa(question: str, answer: str, kind: str) -> QAPair:
    return {"question": question, "answer": answer, "kind": kind, "verified": True}
