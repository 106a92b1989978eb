"""A third-party filter in one file: reject tiles that are mostly dark (deep shadow, night
passes, dark water), and record the dark share as a score on every sample.

Use it from a recipe:

    plugins: [plugins/dark_fraction_filter.py]     # relative to the recipe file
    filters:
      max_dark_fraction_v1: {max_fraction: 0.5, level: 20}
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from geoweave.record import Sample
from geoweave.registry import FILTERS


@FILTERS.add("max_dark_fraction_v1")
class MaxDarkFraction:
    """Reject a tile when more than ``max_fraction`` of its valid pixels are darker than
    ``level`` in every channel."""

    name = "max_dark_fraction_v1"
    stage: ClassVar[Literal["image", "text"]] = "image"  # runs before any text is written

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)

        max_fraction: float = Field(0.5, ge=0, le=1)
        level: int = Field(20, ge=0, le=255)

    def __init__(self, opts: Options) -> None:
        self.max_fraction, self.level = opts.max_fraction, opts.level

    def check(self, sample: Sample) -> str | None:
        assert sample.rgb is not None and sample.valid is not None
        dark = sample.rgb.max(axis=2) < self.level
        valid = int(sample.valid.sum())
        fraction = float(dark[sample.valid].sum() / valid) if valid else 0.0
        sample.scores["dark_fraction"] = round(fraction, 4)
        return "too_dark" if fraction > self.max_fraction else None
