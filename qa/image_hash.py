"""Perceptual hashes of a tile's image, for the corpus-wide near-duplicate pass.

Two 64-bit hashes per image, numpy only (tens of microseconds per tile):

- ``phash``: the luminance, area-averaged to 32 x 32, its 2-D DCT-II; the 8 x 8 lowest
  frequencies against their median (as ``imagehash.phash``). Unchanged by a brightness or
  contrast change, little changed by a shift of a pixel or two.
- ``dhash``: the luminance area-averaged to 8 rows x 9 columns; each bit says whether a pixel
  is brighter than its right neighbour. A second, independent view of the structure: the pass
  asks both to agree, so a pHash collision of two unlike images is not taken for a duplicate.

Bits are packed row-major, first bit highest, into a signed 64-bit integer (the Arrow and
DuckDB ``BIGINT`` the sidecar stores); the Hamming distance is ``bit_count(xor(a, b))``.
"""

from __future__ import annotations

import functools

import numpy as np

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


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
    """``gray`` (H, W) averaged over a rows x cols grid of boxes (two small matrix products)."""
    h, w = gray.shape
    return _bin_matrix(h, rows) @ gray @ _bin_matrix(w, cols).T


def luminance(rgb: np.ndarray) -> np.ndarray:
    """(H, W) float32 luminance of an (H, W, 3) uint8 image."""
    return rgb.astype(np.float32) @ LUMA


def _pack(bits: np.ndarray) -> int:
    return int(np.packbits(bits.ravel().astype(np.uint8)).view(">i8")[0])


def phash(small: np.ndarray) -> int:
    """pHash of the 32 x 32 area mean of an image's luminance."""
    d = _dct_matrix(32)
    low = (d @ small @ d.T)[:8, :8].ravel()
    middle = np.sort(low)[31:33].mean()  # the median of 64 values
    return _pack(low > middle)


def dhash(small: np.ndarray) -> int:
    """dHash of the 8 x 9 area mean (taken from the 32 x 32 one: 32 px into 9 boxes)."""
    grid = area_mean(small, 8, 9)
    return _pack(grid[:, 1:] > grid[:, :-1])


PREVIEW_SIDE = 128


def preview(img: np.ndarray, side: int = PREVIEW_SIDE) -> np.ndarray:
    """Every k-th pixel of an (H, W, ...) image, k the smallest step that brings the larger
    side to ``side`` or less (a view: no copy). Shares of pixels (cloudy, saturated) are
    estimated on it without bias, and the 32 x 32 means of the hashes change little; a 256 px
    tile costs what a 128 px one does."""
    step = max(1, -(-max(img.shape[0], img.shape[1]) // side))
    return img[::step, ::step] if step > 1 else img


def image_hashes(rgb: np.ndarray) -> tuple[int, int]:
    """(phash, dhash) of an (H, W, 3) uint8 image (from its ``preview``)."""
    small = area_mean(luminance(preview(rgb)), 32, 32).astype(np.float32)
    return phash(small), dhash(small)


def hamming(a: int, b: int) -> int:
    """Bits that differ between two hashes stored as signed 64-bit integers."""
    return ((a ^ b) & (2**64 - 1)).bit_count()
