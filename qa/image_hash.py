"""Perceptual hashes of a tile's image, for the corpus-wide near-duplicate pass.

Two 64-bit hashes per image, numpy only (tens of microseconds per tile):

- ``phash``: the grey level (the mean of R, G and B, ``qa/pixels.py``), area-averaged to
  32 x 32, its 2-D DCT-II; the 8 x 8 lowest frequencies against their median (the algorithm of
  ``imagehash.phash``, which starts from the luminance instead). Unchanged by a brightness or
  contrast change, little changed by a shift of a pixel or two.
- ``dhash``: the grey level area-averaged to 8 rows x 9 columns; each bit says whether a pixel
  is brighter than its right neighbour. A second, independent view of the structure: the pass
  asks both to agree, so a pHash collision of two unlike images is not taken for a duplicate.

The pipeline hashes the grey sum the image filters already computed (``hashes_of_grey``);
the 32 x 32 area means are exact integer box sums when the side is a multiple of 32 (both
hashes only compare values, so sums serve as means).

Bits are packed row-major, first bit highest, into a signed 64-bit integer (the Arrow and
DuckDB ``BIGINT`` the sidecar stores); the Hamming distance is ``bit_count(xor(a, b))``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from geoweave.qa.pixels import grey_sum, preview


@functools.cache
def _dct_matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II matrix: ``D @ x`` is the DCT of a column vector."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    d = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    d[0] /= np.sqrt(2.0)
    return d.astype(np.float32)


@functools.cache
def _bin_matrix(size: int, bins: int) -> np.ndarray:
    """(bins, size): row i averages the pixels of bin i along an axis; a bin is one pixel wide
    at least (an image smaller than the bins repeats pixels)."""
    start = (np.arange(bins) * size) // bins
    stop = np.maximum(start + 1, (np.arange(1, bins + 1) * size) // bins)
    idx = np.arange(size)[None, :]
    m = ((idx >= start[:, None]) & (idx < stop[:, None])).astype(np.float32)
    return m / m.sum(axis=1, keepdims=True)


def area_mean(gray: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """``gray`` (..., H, W) averaged over a rows x cols grid of boxes (two matrix products)."""
    h, w = gray.shape[-2:]
    return _bin_matrix(h, rows) @ gray @ _bin_matrix(w, cols).T


def box_sums(total: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Integer sums of (..., H, W) grey sums over a rows x cols grid of equal boxes (H and W
    multiples of rows and cols): strided adds, 3x faster than the matrix products."""
    ky, kx = total.shape[-2] // rows, total.shape[-1] // cols
    wide = ky * kx * 765 > np.iinfo(np.uint16).max  # 765: the largest grey sum
    band: np.ndarray = total[..., 0::ky, :].astype(np.uint32 if wide else np.uint16)
    for i in range(1, ky):
        band += total[..., i::ky, :]
    out: np.ndarray = band[..., 0::kx].copy()
    for i in range(1, kx):
        out += band[..., i::kx]
    return out


def _pack(bits: np.ndarray) -> list[int]:
    """(n, ...) bools, 64 per row, as n signed 64-bit integers, first bit highest."""
    packed = np.packbits(bits.reshape(len(bits), 64).astype(np.uint8), axis=1)
    return packed.view(">i8").ravel().tolist()


def phashes(small: np.ndarray) -> list[int]:
    """pHash of each (32 x 32) area mean of a stack (n, 32, 32) float32."""
    d = _dct_matrix(32)
    low = (d @ small @ d.T)[:, :8, :8].reshape(len(small), 64)
    middle = np.sort(low, axis=1)[:, 31:33].mean(axis=1)  # the median of 64 values
    return _pack(low > middle[:, None])


def phash(small: np.ndarray) -> int:
    """pHash of the 32 x 32 area mean of an image's luminance."""
    return phashes(small[None])[0]


def dhashes(small: np.ndarray) -> list[int]:
    """dHash of each 8 x 9 area mean (taken from the 32 x 32 one: 32 px into 9 boxes)."""
    grid = area_mean(small, 8, 9)
    return _pack(grid[:, :, 1:] > grid[:, :, :-1])


def image_hashes(rgb: np.ndarray) -> tuple[int, int]:
    """(phash, dhash) of an (H, W, 3) uint8 image (from its ``preview``)."""
    return hashes_of_grey(grey_sum(preview(rgb)))


def hashes_of_grey(total: np.ndarray) -> tuple[int, int]:
    """(phash, dhash) from the (H, W) uint16 grey sum of an image's ``preview``."""
    return hashes_of_greys([total])[0]


def hashes_of_greys(totals: Sequence[np.ndarray]) -> list[tuple[int, int]]:
    """``hashes_of_grey`` of many grey sums, those of one shape as one stack (a shard's tiles
    share theirs): the same bits as one at a time, in a tenth of the numpy calls per tile."""
    out: list[tuple[int, int]] = [(0, 0)] * len(totals)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, t in enumerate(totals):
        by_shape.setdefault(t.shape, []).append(i)
    for (h, w), idx in by_shape.items():
        stack = np.stack([totals[i] for i in idx])
        if h % 32 == 0 and w % 32 == 0:
            small = box_sums(stack, 32, 32).astype(np.float32)
        else:  # sides that do not divide (or under 32 px: pixels repeat) take the exact means
            small = area_mean(stack.astype(np.float32), 32, 32).astype(np.float32)
        for i, ph, dh in zip(idx, phashes(small), dhashes(small), strict=True):
            out[i] = (ph, dh)
    return out


def hamming(a: int, b: int) -> int:
    """Bits that differ between two hashes stored as signed 64-bit integers."""
    return ((a ^ b) & (2**64 - 1)).bit_count()
