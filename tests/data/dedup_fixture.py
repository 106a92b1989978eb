"""Images whose near-duplicate answer is known, cut from the real SF Bay Landsat image (read
from ../shared/data, never copied): seeded base windows that do not overlap and are not flat,
and of each: the same window again, a copy shifted by one pixel, a brighter copy (+20) and a
copy with 15% more contrast. Images of one family are duplicates of each other; images of two
families are not (different ground). Returned as sidecar-like rows for the dedup pass.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from geoweave.qa.image_hash import image_hashes

VARIANTS = ("base", "again", "shift1", "brighter", "contrast")


def _stretch(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        a = src.read([1, 2, 3]).transpose(1, 2, 0).astype(np.float32)
    lo, hi = np.percentile(a, 2), np.percentile(a, 98)
    return np.clip((a - lo) / (hi - lo) * 255, 0, 255).astype(np.uint8)


def _bases(img: np.ndarray, n: int, size: int, seed: int) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    taken: list[tuple[int, int]] = []
    for _ in range(20000):
        r = int(rng.integers(0, img.shape[0] - size - 1))
        c = int(rng.integers(0, img.shape[1] - size - 1))
        if img[r : r + size, c : c + size].std() < 20:  # flat water: blank, not a test
            continue
        if all(abs(r - r2) > size + 1 or abs(c - c2) > size + 1 for r2, c2 in taken):
            taken.append((r, c))
        if len(taken) == n:
            break
    return taken


def _variant(img: np.ndarray, r: int, c: int, size: int, kind: str) -> np.ndarray:
    if kind == "shift1":
        return img[r + 1 : r + 1 + size, c : c + size]
    tile = img[r : r + size, c : c + size].astype(np.float32)
    if kind == "brighter":
        tile = tile + 20
    elif kind == "contrast":
        tile = (tile - tile.mean()) * 1.15 + tile.mean()
    return np.clip(tile, 0, 255).astype(np.uint8)


def rows(path: Path, families: int = 30, size: int = 64, seed: int = 7) -> list[dict[str, Any]]:
    """Sidecar rows (key, status, phash, dhash, osm, family) of ``families`` x 5 images."""
    img = _stretch(path)
    out = []
    for f, (r, c) in enumerate(_bases(img, families, size, seed)):
        for kind in VARIANTS:
            ph, dh = image_hashes(np.ascontiguousarray(_variant(img, r, c, size, kind)))
            out.append({"key": f"f{f:02d}-{kind}", "status": "kept", "phash": ph, "dhash": dh,
                        "osm": [], "family": f})  # fmt: skip
    return out
