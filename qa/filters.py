"""Per-sample quality filters, one small registered component each.

A filter returns None to keep a sample or the reason to reject it, and records the score it
judged by in ``sample.scores`` (kept samples too), so thresholds can be revisited with SQL on
the manifest without rebuilding. The pipeline records the filter's versioned name on the
samples it rejects (``rejected_by``) and counts them in the funnel.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from geoweave.qa import pixels
from geoweave.record import Sample
from geoweave.registry import FILTERS, NoOptions


@FILTERS.add("nodata_v1")
class NodataFilter:
    """Tiles with no imagery data, or too large a share of nodata pixels."""

    name = "nodata_v1"
    stage: ClassVar[Literal["image", "text"]] = "image"

    class Options(NoOptions):
        max_fraction: float = Field(0.2, ge=0, le=1, description="reject tiles with more nodata")

    def __init__(self, opts: Options) -> None:
        self.max_fraction = opts.max_fraction

    def check(self, sample: Sample) -> str | None:
        sample.scores["nodata_fraction"] = round(sample.nodata_fraction, 4)
        if sample.nodata_fraction >= 1.0:
            return "no_imagery_data"
        return "too_much_nodata" if sample.nodata_fraction > self.max_fraction else None


@FILTERS.add("low_variance_v1")
class LowVarianceFilter:
    """Blank tiles: the grey level's standard deviation (over the tile's ``preview``: every
    k-th pixel above 128 px) is below ``min_std``."""

    name = "low_variance_v1"
    stage: ClassVar[Literal["image", "text"]] = "image"

    class Options(NoOptions):
        min_std: float = Field(2.0, ge=0, description="minimum grey-level standard deviation")

    def __init__(self, opts: Options) -> None:
        self.min_std = opts.min_std

    def check(self, sample: Sample) -> str | None:
        if sample.rgb is None:
            return "no_image"
        std = pixels.grey_std(pixels.grey_sum_of(sample))  # the grey shared with cloud_v1
        sample.scores["grey_std"] = round(std, 3)
        return "blank_or_low_variance" if std < self.min_std else None


@FILTERS.add("min_labels_v1")
class MinLabelsFilter:
    """Tiles with fewer visible labels than ``min_labels``."""

    name = "min_labels_v1"
    stage: ClassVar[Literal["image", "text"]] = "image"

    class Options(NoOptions):
        min_labels: int = Field(1, ge=0, description="minimum number of visible labels")

    def __init__(self, opts: Options) -> None:
        self.min_labels = opts.min_labels

    def check(self, sample: Sample) -> str | None:
        sample.scores["n_labels"] = float(len(sample.osm))
        return "too_few_labels" if len(sample.osm) < self.min_labels else None
