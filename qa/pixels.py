"""Pixel statistics shared by the image filters and the hashes, each computed once per tile.

The grey level of a tile is the mean of its R, G and B. Kept as their integer sum (uint16,
0 ... 765), it is exact, half the memory of float32, and cheap to reduce: the blank-tile test
(``low_variance_v1``), the cloud texture (``cloud_v1``) and the perceptual hashes all start
from it, so the pipeline computes it once per sample (``grey_sum_of``) and every consumer reads
the same array. Sums stay exact integers to the end where a test compares them (the 3 x 3
texture), so no threshold is missed by a rounding error.
"""

from __future__ import annotations

import math

import numpy as np

from geoweave.record import Sample

GREY_SUM = "grey_sum"  # the key of the grey sum in ``Sample.pixel_cache``


def grey_sum(rgb: np.ndarray) -> np.ndarray:
    """R + G + B of an (H, W, 3) uint8 image as (H, W) uint16: three in-place channel adds
    (6x faster than a strided ``sum(axis=2)`` on a 256 px tile)."""
    total = rgb[..., 0].astype(np.uint16)
    total += rgb[..., 1]
    total += rgb[..., 2]
    return total


def grey_sum_of(sample: Sample) -> np.ndarray:
    """The grey sum of a sample's RGB, computed on first use and kept with its pixels."""
    cached = sample.pixel_cache.get(GREY_SUM)
    if cached is None:
        assert sample.rgb is not None, "grey_sum_of needs the sample's pixels"
        cached = sample.pixel_cache[GREY_SUM] = grey_sum(sample.rgb)
    return cached


def grey_std(total: np.ndarray) -> float:
    """Standard deviation of the grey level, from its sum: ``std(sum / 3) = std(sum) / 3``."""
    return float(total.std(dtype=np.float64) / 3.0)


def box3(padded: np.ndarray) -> np.ndarray:
    """Sums over every 3 x 3 neighbourhood of an edge-padded (H + 2, W + 2) array."""
    rows = padded[:-2] + padded[1:-1] + padded[2:]
    return rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:]


def smooth(total: np.ndarray, max_texture: float) -> np.ndarray:
    """Per pixel, whether the grey level's standard deviation over its 3 x 3 neighbourhood
    (edges repeated) is below ``max_texture``; ``total`` is the grey sum (``grey_sum``).

    Exact: with s the sums in a neighbourhood, 729 var(grey) = 9 sum(s^2) - (sum s)^2, an
    integer (at most 47.4M: uint32), compared with the smallest integer >= 729 t^2.
    """
    padded = np.pad(total, 1, mode="edge")
    s1 = box3(padded).astype(np.uint32)  # <= 9 * 765
    s2 = padded.astype(np.uint32)
    s2 *= s2
    s2 = box3(s2)  # <= 9 * 765^2
    s2 *= 9
    s1 *= s1
    s2 -= s1  # >= 0 (Cauchy-Schwarz)
    limit = math.ceil(729 * max_texture * max_texture)
    return s2 < limit if limit < 2**32 else np.ones(total.shape, dtype=bool)
