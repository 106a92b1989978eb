"""Per-sample quality filters: each returns None to keep a sample or a reason to reject it.

Filters also record the score they judged by in ``sample.scores``, so thresholds can be
revisited with SQL on the manifest without rebuilding.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from geoweave.builders.recipe import FiltersConfig
from geoweave.builders.sample import Sample

Filter = Callable[[Sample], str | None]


def nodata_filter(max_fraction: float) -> Filter:
    def check(sample: Sample) -> str | None:
        sample.scores["nodata_fraction"] = round(sample.nodata_fraction, 4)
        if sample.nodata_fraction >= 1.0:
            return "no_imagery_data"
        return "too_much_nodata" if sample.nodata_fraction > max_fraction else None

    return check


def low_variance_filter(min_std: float) -> Filter:
    def check(sample: Sample) -> str | None:
        if sample.rgb is None:
            return "no_image"
        grey = sample.rgb.mean(axis=2)
        std = float(np.std(grey))
        sample.scores["grey_std"] = round(std, 3)
        return "blank_or_low_variance" if std < min_std else None

    return check


def min_labels_filter(min_labels: int) -> Filter:
    def check(sample: Sample) -> str | None:
        sample.scores["n_labels"] = float(len(sample.osm))
        return "too_few_labels" if len(sample.osm) < min_labels else None

    return check


def build_filters(cfg: FiltersConfig) -> list[tuple[str, Filter]]:
    """The recipe's filters in the order they run (cheapest, most decisive first)."""
    return [
        ("nodata_v1", nodata_filter(cfg.max_nodata_fraction)),
        ("low_variance_v1", low_variance_filter(cfg.min_std)),
        ("min_labels_v1", min_labels_filter(cfg.min_labels)),
    ]


def apply_filters(sample: Sample, filters: list[tuple[str, Filter]]) -> None:
    """Run every filter (all scores get recorded); the first reason rejects the sample."""
    for _name, check in filters:
        reason = check(sample)
        if reason and sample.status == "kept":
            sample.reject(reason)
