"""Pixel statistics shared by the image filters and the hashes, each computed once per tile.

Every image statistic of a tile is taken on its ``preview``: the tile itself up to 128 px,
every k-th pixel above (so a 256 px tile costs what a 128 px one does; shares of pixels are
estimated without bias, and the standard deviation and the hashes' 32 x 32 means change
little). The pipeline copies the preview once into R, G and B planes (``planes_of``): numpy
reduces a contiguous plane about 10x faster than a channel of interleaved pixels. The grey
level, the mean of R, G and B, is kept as their integer sum (uint16, 0 ... 765,
``grey_sum_of``): exact, and read by the blank-tile test (``low_variance_v1``), the cloud
texture (``cloud_v1``) and the perceptual hashes. Sums stay exact integers to the end where a
test compares them (the 3 x 3 texture), so no threshold is missed by a rounding error.
"""

from __future__ import annotations

import math

import numpy as np

from geoweave.record import Sample

PREVIEW_SIDE = 128
PLANES, GREY_SUM, VALID = "planes", "grey_sum", "valid"  # keys of ``Sample.pixel_cache``


def preview(img: np.ndarray, side: int = PREVIEW_SIDE) -> np.ndarray:
    """Every k-th pixel of an (H, W, ...) image, k the smallest step that brings the larger
    side to ``side`` or less (a view: no copy)."""
    step = max(1, -(-max(img.shape[0], img.shape[1]) // side))
    return img[::step, ::step] if step > 1 else img


def valid_of(sample: Sample) -> np.ndarray | None:
    """The sample's validity mask over its preview, C-contiguous, or None when every pixel is
    valid (most tiles: the filters then count no mask at all); computed on first use."""
    cache = sample.pixel_cache
    if VALID not in cache:
        valid = sample.valid
        if valid is None or np.count_nonzero(valid) == valid.size:
            cache[VALID] = None
        else:
            cache[VALID] = np.ascontiguousarray(preview(valid))
    return cache[VALID]


def planes_of(sample: Sample) -> np.ndarray:
    """(3, h, w) C-contiguous uint8: the R, G and B planes of the sample's preview, copied
    on first use and kept with its pixels."""
    cached = sample.pixel_cache.get(PLANES)
    if cached is None:
        assert sample.rgb is not None, "planes_of needs the sample's pixels"
        cached = sample.pixel_cache[PLANES] = np.ascontiguousarray(
            preview(sample.rgb).transpose(2, 0, 1)
        )
    return cached


def grey_sum_of(sample: Sample) -> np.ndarray:
    """R + G + B of the sample's preview as (h, w) uint16, computed on first use."""
    cached = sample.pixel_cache.get(GREY_SUM)
    if cached is None:
        cached = sample.pixel_cache[GREY_SUM] = plane_sum(planes_of(sample))
    return cached


def plane_sum(planes: np.ndarray) -> np.ndarray:
    """The sum of (3, h, w) uint8 planes as (h, w) uint16: three in-place adds."""
    total = planes[0].astype(np.uint16)
    total += planes[1]
    total += planes[2]
    return total


def grey_sum(rgb: np.ndarray) -> np.ndarray:
    """R + G + B of an (H, W, 3) uint8 image as (H, W) uint16."""
    return plane_sum(np.moveaxis(rgb, 2, 0))


def grey_std(total: np.ndarray) -> float:
    """Standard deviation of the grey level, from its sum: ``std(sum / 3) = std(sum) / 3``.

    Exact in integers (n * sum(x^2) - sum(x)^2 is the variance times n^2; a uint16 square fits
    uint32), one pass and no float copy: a third faster than ``ndarray.std``. The plain sum
    accumulates in uint32 while it cannot overflow (numpy's widening reductions are slow).
    """
    flat = total.ravel()
    n = flat.size
    if n == 0:
        return float("nan")
    squares = flat.astype(np.uint32)
    squares *= squares
    wide = np.uint32 if n <= (2**32 - 1) // 765 else np.uint64
    s, ss = int(np.add.reduce(flat, dtype=wide)), int(squares.sum(dtype=np.uint64))
    return math.sqrt(n * ss - s * s) / n / 3.0


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
    limit = texture_limit(max_texture)
    return s2 < limit if limit < 2**32 else np.ones(total.shape, dtype=bool)


def texture_limit(max_texture: float) -> int:
    """The smallest integer >= 729 t^2: 729 var(grey) of a 3 x 3 neighbourhood is below it
    exactly when the grey level's standard deviation there is below ``max_texture``."""
    return math.ceil(729 * max_texture * max_texture)


_STEPS = np.array([-1, 0, 1])


def smooth_at(total: np.ndarray, ys: np.ndarray, xs: np.ndarray, max_texture: float) -> np.ndarray:
    """``smooth`` at the pixels (ys, xs) only: each one's 3 x 3 neighbourhood of the grey sum
    gathered (edges repeated: the indices are clamped to the tile), the same exact test."""
    h, w = total.shape
    rows = np.minimum(np.maximum(ys[:, None] + _STEPS, 0), h - 1)  # (k, 3); np.clip: 5x slower
    cols = np.minimum(np.maximum(xs[:, None] + _STEPS, 0), w - 1)
    index = (rows * w)[:, :, None] + cols[:, None, :]  # (k, 3, 3) flat indices
    hood = total.ravel()[index.reshape(len(ys), 9)].astype(np.int64)
    s1 = hood.sum(axis=1)
    var729 = 9 * (hood * hood).sum(axis=1) - s1 * s1
    return var729 < texture_limit(max_texture)
