"""Checks shared by every raster input (imagery and land cover)."""

from __future__ import annotations

from pathlib import Path

import rasterio
from rasterio.errors import RasterioError

from geoweave.builders.errors import FatalError


def check_readable(ds: rasterio.DatasetReader, path: Path, what: str) -> None:
    """Read a decimated copy of every band, so a truncated or corrupt file fails now.

    A decimated read touches every block of a plain GeoTIFF, or only the overviews of a COG,
    so it stays cheap on large inputs.
    """
    step = max(1, max(ds.width, ds.height) // 512)
    shape = (ds.count, max(1, ds.height // step), max(1, ds.width // step))
    try:
        ds.read(out_shape=shape)
    except RasterioError as e:
        raise FatalError(
            f"{what} {path}: the pixel data cannot be read ({e}); the file is truncated or "
            "corrupt: re-export or re-download it"
        ) from e
