"""Seeded GeoTIFF fixtures: small rasters with a real CRS, written by a script, not committed.

Run ``python tests/data/raster_fixture.py OUT_DIR`` to write them by hand.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
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


def write_partial_nodata(
    path: Path, seed: int = 2, size: int = 64, nodata: int | None = 255
) -> Path:
    """A 3-band uint8 image whose nodata value (255) fills a corner in every band and
    scattered pixels of band 1 only (``nodata=None``: the value is there, undeclared)."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(3, size, size), dtype=np.uint8)
    data[0, ::3, ::5] = 255
    data[:, size * 5 // 8 :, size * 5 // 8 :] = 255
    return _write(path, data, 10.0, **({} if nodata is None else {"nodata": nodata}))


def write_uint16(path: Path, seed: int = 1, size: int = 64, res: float = 10.0) -> Path:
    """A 4-band uint16 Sentinel-2-like image (B2, B3, B4, B8 reflectance x 10000)."""
    rng = np.random.default_rng(seed)
    data = rng.integers(200, 3000, size=(4, size, size), dtype=np.uint16)
    return _write(path, data, res)


def write_float(path: Path, seed: int = 1, size: int = 64, res: float = 10.0) -> Path:
    """A 3-band float32 reflectance image, values uniform in 0..0.5 (as surface reflectance)."""
    rng = np.random.default_rng(seed)
    data = rng.uniform(0.0, 0.5, size=(3, size, size)).astype(np.float32)
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


def write_cog_with_bad_block(
    path: Path, seed: int = 0, size: int = 1024, block: int = 256, overviews: bool = True
) -> Path:
    """A tiled, deflated GeoTIFF with overviews whose one full-resolution block is garbage.

    The overviews, the first and the last block are intact, so the up-front check succeeds;
    only reads of the full-resolution pixels under block (1, 1) fail, as a damaged download of
    a COG would. ``overviews=False`` writes none (the stretch then samples blocks).
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
    if overviews:
        with rasterio.open(path, "r+") as ds:
            ds.build_overviews([2, 4, 8])
    with rasterio.open(path) as ds:
        offset = int(ds.get_tag_item("BLOCK_OFFSET_1_1", "TIFF", bidx=1))
        length = int(ds.get_tag_item("BLOCK_SIZE_1_1", "TIFF", bidx=1))
    blob = bytearray(path.read_bytes())
    blob[offset : offset + length] = rng.integers(0, 255, length, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(blob))
    return path


def textured(rng: np.random.Generator, shape: tuple[int, int, int], lo: int, hi: int) -> np.ndarray:
    """Smooth ground-like structure (a few seeded waves) plus pixel noise, in [lo, hi]."""
    count, h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty(shape, dtype=np.float32)
    for b in range(count):
        f = rng.uniform(0.005, 0.05, size=(3, 2))
        phase = rng.uniform(0, 2 * np.pi, size=3)
        waves = sum(np.sin(f[i, 0] * xx + f[i, 1] * yy + phase[i]) for i in range(3))
        out[b] = waves / 3 + rng.normal(0, 0.15, size=(h, w))
    out = (out - out.min()) / (out.max() - out.min())
    return (lo + out * (hi - lo)).round()


def write_textured(
    path: Path,
    seed: int = 0,
    size: int = 512,
    res: float = 10.0,
    dtype: str = "uint8",
    block: int = 256,
    overviews: tuple[int, ...] = (),
) -> Path:
    """A tiled 3-band image in UTM 10N with smooth structure and noise, nodata 0 nowhere.

    Its pixel grid is the tile grid of the same GSD (corner at ``ORIGIN``, a multiple of the
    pixel size), which is what the aligned read path needs.
    """
    rng = np.random.default_rng(seed)
    top = 250 if dtype == "uint8" else 4000
    data = textured(rng, (3, size, size), 1, top).astype(dtype)
    extra = {"tiled": True, "blockxsize": block, "blockysize": block, "compress": "deflate"}
    _write(path, data, res, **extra)
    if overviews:
        with rasterio.open(path, "r+") as ds:
            ds.build_overviews(list(overviews))
    return path


def write_rotated(
    path: Path, seed: int = 0, size: int = 384, res: float = 10.0, angle: float = 20.0
) -> Path:
    """A 3-band uint8 image in UTM zone 11 (next to the tile grid's zone 10) with a rotated
    pixel grid, and a nodata (0) strip on its first 16 columns: every tile needs a real warp."""
    rng = np.random.default_rng(seed)
    data = textured(rng, (3, size, size), 1, 250).astype(np.uint8)
    data[:, :, :16] = 0
    # (-120.08, 37.80): EPSG:32611 coordinates just west of the zone 10 / 11 boundary
    transform = Affine.translation(229_000.0, 4_188_000.0) * Affine.rotation(angle)
    transform *= Affine.scale(res, -res)
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8"}
    with rasterio.open(path, "w", **profile, crs="EPSG:32611", transform=transform, nodata=0) as ds:
        ds.write(data)
    return path


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    out.mkdir(parents=True, exist_ok=True)
    for fn in (write_rgb, write_uint16, write_no_crs, write_corrupt):
        print(fn(out / f"{fn.__name__.removeprefix('write_')}.tif"))
