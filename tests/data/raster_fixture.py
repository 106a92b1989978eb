"""Seeded GeoTIFF fixtures: small rasters with a real CRS, written by a script, not committed.

Run ``python tests/data/raster_fixture.py OUT_DIR`` to write them by hand.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

# EPSG:32610 (UTM 10N) origin near West Oakland, (-122.30, 37.80) in lon/lat.
ORIGIN = (563_000.0, 4_184_000.0)


def _write(path: Path, data: np.ndarray, res: float, **extra: object) -> Path:
    """Write (bands, H, W) pixels as a GeoTIFF in UTM 10N with its corner at ``ORIGIN``."""
    count, height, width = data.shape
    profile = {"driver": "GTiff", "width": width, "height": height, "count": count}
    profile |= {
        "dtype": data.dtype,
        "crs": "EPSG:32610",
        "transform": from_origin(*ORIGIN, res, res),
    }
    with rasterio.open(path, "w", **profile, **extra) as ds:
        ds.write(data)
    return path


def write_rgb(
    path: Path, seed: int = 0, size: int = 96, res: float = 10.0, nodata_cols: int = 16
) -> Path:
    """A 3-band uint8 image in UTM 10N with textured content and a nodata strip on the left."""
    rng = np.random.default_rng(seed)
    data = rng.integers(40, 220, size=(3, size, size), dtype=np.uint8)
    data[:, :, :nodata_cols] = 0
    return _write(path, data, res, nodata=0)


def write_uint16(path: Path, seed: int = 1, size: int = 64, res: float = 10.0) -> Path:
    """A 4-band uint16 Sentinel-2-like image (B2, B3, B4, B8 reflectance x 10000)."""
    rng = np.random.default_rng(seed)
    data = rng.integers(200, 3000, size=(4, size, size), dtype=np.uint16)
    return _write(path, data, res)


def write_no_crs(path: Path) -> Path:
    data = np.full((1, 16, 16), 7, dtype=np.uint8)
    profile = {"driver": "GTiff", "width": 16, "height": 16, "count": 1, "dtype": "uint8"}
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
    return path


def write_corrupt(path: Path, seed: int = 0) -> Path:
    """A real GeoTIFF cut short: the header is fine, the pixel data is gone."""
    good = write_rgb(path.with_suffix(".good.tif"), seed)
    blob = good.read_bytes()
    path.write_bytes(blob[: len(blob) // 3])
    good.unlink()
    return path


def write_cog_with_bad_block(path: Path, seed: int = 0, size: int = 1024, block: int = 256) -> Path:
    """A tiled, deflated GeoTIFF with overviews whose one full-resolution block is garbage.

    The overviews are intact, so a decimated read (the up-front check) succeeds; only reads of
    the full-resolution pixels under block (1, 1) fail, as a damaged download of a COG would.
    """
    rng = np.random.default_rng(seed)
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 3,
        "dtype": "uint8",
        "crs": "EPSG:32610",
        "transform": from_origin(*ORIGIN, 10.0, 10.0),
        "tiled": True,
        "blockxsize": block,
        "blockysize": block,
        "compress": "deflate",
        "nodata": 0,
    }
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(rng.integers(30, 220, size=(3, size, size), dtype=np.uint8))
    with rasterio.open(path, "r+") as ds:
        ds.build_overviews([2, 4, 8])
    with rasterio.open(path) as ds:
        offset = int(ds.get_tag_item("BLOCK_OFFSET_1_1", "TIFF", bidx=1))
        length = int(ds.get_tag_item("BLOCK_SIZE_1_1", "TIFF", bidx=1))
    blob = bytearray(path.read_bytes())
    blob[offset : offset + length] = rng.integers(0, 255, length, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(blob))
    return path


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    out.mkdir(parents=True, exist_ok=True)
    for fn in (write_rgb, write_uint16, write_no_crs, write_corrupt):
        print(fn(out / f"{fn.__name__.removeprefix('write_')}.tif"))
