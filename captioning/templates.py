"""Template captions (SkyScript style): deterministic text built from a sample's visible labels.

Every noun comes from ``phrases.element_phrase`` of a label the sample holds, so a template
caption never mentions what is not in the labels. The same seed and key give the same text.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from geoweave.protocols import TileDescription
from geoweave.record import Caption
from geoweave.registry import CAPTIONERS
from geoweave.sources.phrases import a, element_phrase, plural

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


def describe_counts(tile: TileDescription, limit: int = 3) -> list[tuple[str, int, bool]]:
    """(phrase, count, countable) of the most visible kinds of element, by pixel coverage.

    Lines are not countable: OSM splits one road or river into many ways, so "28 residential
    roads" would count way segments, not roads.
    """
    counts: Counter[str] = Counter()
    cover: dict[str, float] = {}
    lines: set[str] = set()
    for el in tile.elements:
        p = element_phrase(el["tags"])
        if p:
            counts[p] += 1
            cover[p] = cover.get(p, 0.0) + el["coverage_px"]
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


def landcover_clause(tile: TileDescription) -> str:
    """'mostly forest (62%)' when the top class covers half the valid pixels, else 'partly'."""
    if not tile.landcover:
        return ""
    name, frac = max(tile.landcover.items(), key=lambda kv: kv[1])
    return f"{'mostly' if frac >= 0.5 else 'partly'} {name.lower()} ({frac:.0%})"


def metres(value: float) -> str:
    """A resolution as a caption says it: "30", "23.7", "0.6"."""
    return f"{value:.0f}" if value >= 10 and abs(value - round(value)) < 0.05 else f"{value:.3g}"


class TemplateOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    per_sample: int = Field(2, ge=1, le=10, description="captions per tile")


@CAPTIONERS.add("template_v1")
class TemplateCaptioner:
    """Several templates; the choice per tile is seeded by the run seed and the tile key."""

    name = "template_v1"
    Options = TemplateOptions

    def __init__(self, opts: TemplateOptions | None = None, seed: int = 0) -> None:
        self.seed, self.per_sample = seed, (opts or TemplateOptions()).per_sample

    def caption(self, batch: Sequence[TileDescription]) -> list[list[Caption] | Exception]:
        """Templates are cheap and local: one tile after the other."""
        return [self.caption_one(tile) for tile in batch]

    def caption_one(self, tile: TileDescription) -> list[Caption]:
        rng = random.Random(f"{self.seed}|{tile.key}")
        groups = describe_counts(tile)
        lc = landcover_clause(tile)
        if not groups and not lc:
            return []
        gsd = metres(tile.resolution_m)  # the imagery's own when the tile is upsampled
        if groups:
            things = join_words([count_phrase(p, n, c) for p, n, c in groups])
            lc = f", {lc}" if lc else ""
            texts = [t.format(gsd=gsd, things=things, landcover=lc) for t in TEMPLATES]
        else:
            texts = [t.format(gsd=gsd, landcover=lc) for t in LANDCOVER_ONLY]
        positional = self._positional(tile)
        if positional:
            texts.append(positional)
        rng.shuffle(texts)
        return [self._record(t) for t in texts[: self.per_sample]]

    def _positional(self, tile: TileDescription) -> str | None:
        for el in tile.elements:
            p = element_phrase(el["tags"])
            if p and not el["clipped"] and el["position"] != "centre":
                one = a(p)
                return POSITIONAL.format(one=one[0].upper() + one[1:], where=WHERE[el["position"]])
        return None

    def _record(self, text: str) -> Caption:
        return {
            "text": text,
            "style": "template",
            "captioner": self.name,
            "prompt_version": PROMPT_VERSION,
        }
