"""Template captions (SkyScript style): deterministic text built from a sample's visible labels.

Every noun comes from ``phrases.element_phrase`` of a label the sample holds, so a template
caption never mentions what is not in the labels. The same seed and key give the same text.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from geoweave.builders.sample import Sample
from geoweave.captioning.phrases import a, element_phrase, plural
from geoweave.captioning.registry import CAPTIONERS

PROMPT_VERSION = "templates-2026-11"

TEMPLATES = (
    "A {gsd} m resolution satellite image showing {things}{landcover}.",
    "Overhead view of {things}{landcover}.",
    "Remote sensing image at {gsd} m per pixel with {things}{landcover}.",
    "Satellite image of {things}{landcover}.",
)
LANDCOVER_ONLY = (
    "A {gsd} m resolution satellite image of an area that is {landcover}.",
    "Overhead view of an area that is {landcover}.",
    "Remote sensing image at {gsd} m per pixel of land that is {landcover}.",
)
POSITIONAL = "{one} {where} of the image."
WHERE = {
    "top-left": "in the top-left corner",
    "top": "at the top",
    "top-right": "in the top-right corner",
    "left": "on the left",
    "right": "on the right",
    "bottom-left": "in the bottom-left corner",
    "bottom": "at the bottom",
    "bottom-right": "in the bottom-right corner",
}


def describe_counts(sample: Sample, limit: int = 3) -> list[tuple[str, int, bool]]:
    """(phrase, count, countable) of the most visible kinds of element, by pixel coverage.

    Lines are not countable: OSM splits one road or river into many ways, so "28 residential
    roads" would count way segments, not roads.
    """
    counts: Counter[str] = Counter()
    cover: Counter[str] = Counter()
    lines: set[str] = set()
    for el in sample.osm:
        p = element_phrase(el["tags"])
        if p:
            counts[p] += 1
            cover[p] += el["coverage_px"]
            if el.get("geom_type") == "line":
                lines.add(p)
    ranked = sorted(counts, key=lambda p: (-cover[p], p))
    return [(p, counts[p], p not in lines) for p in ranked[:limit]]


def count_phrase(noun: str, n: int, countable: bool = True) -> str:
    if n == 1:
        return a(noun)
    return f"{n} {plural(noun, n)}" if countable else plural(noun, n)


def join_words(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def landcover_clause(sample: Sample) -> str:
    """'mostly forest (62%)' when the top class covers half the valid pixels, else 'partly'."""
    if not sample.landcover:
        return ""
    name, frac = max(sample.landcover.items(), key=lambda kv: kv[1])
    return f"{'mostly' if frac >= 0.5 else 'partly'} {name.lower()} ({frac:.0%})"


@CAPTIONERS.add("template_v1")
class TemplateCaptioner:
    """Several templates; the choice per sample is seeded by the run seed and the tile key."""

    name = "template_v1"

    def __init__(self, seed: int = 0, per_sample: int = 2) -> None:
        self.seed, self.per_sample = seed, per_sample

    def caption(self, sample: Sample) -> list[dict[str, Any]]:
        rng = random.Random(f"{self.seed}|{sample.key}")
        groups = describe_counts(sample)
        lc = landcover_clause(sample)
        if not groups and not lc:
            return []
        gsd = f"{sample.tile.gsd_m:g}"
        if groups:
            things = join_words([count_phrase(p, n, c) for p, n, c in groups])
            lc = f", {lc}" if lc else ""
            texts = [t.format(gsd=gsd, things=things, landcover=lc) for t in TEMPLATES]
        else:
            texts = [t.format(gsd=gsd, landcover=lc) for t in LANDCOVER_ONLY]
        positional = self._positional(sample)
        if positional:
            texts.append(positional)
        rng.shuffle(texts)
        return [self._record(t) for t in texts[: self.per_sample]]

    def _positional(self, sample: Sample) -> str | None:
        for el in sample.osm:
            p = element_phrase(el["tags"])
            if p and not el["clipped"] and el["position"] != "centre":
                one = a(p)
                return POSITIONAL.format(one=one[0].upper() + one[1:], where=WHERE[el["position"]])
        return None

    def _record(self, text: str) -> dict[str, Any]:
        return {
            "text": text,
            "style": "template",
            "captioner": self.name,
            "prompt_version": PROMPT_VERSION,
        }
