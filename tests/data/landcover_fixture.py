"""Write a tiny ESA-WorldCover-style class raster with a real CRS, for the land-cover tests.

Layout (64 x 64 pixels of 20 m in EPSG:32610, UTM 10N near San Francisco):

- four 32 x 32 quadrants: Tree cover (10) top left, Built-up (50) top right, Cropland (40)
  bottom left, Permanent water bodies (80) bottom right;
- a seeded scatter of Grassland (30) pixels in the Cropland quadrant;
- an 8 x 8 nodata (0) corner at the top left.

Run ``python tests/data/landcover_fixture.py OUT.tif`` to write it by hand.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

SIZE = 64
PIXEL = 20.0
ORIGIN = (550_000.0, 4_180_000.0)  # west, north in EPSG:32610
CRS = "EPSG:32610"
NODATA = 0


def landcover_array(seed: int = 0) -> np.ndarray:
    """The class codes of the fixture, as a (64, 64) uint8 array."""
    half = SIZE // 2
    classes = np.empty((SIZE, SIZE), dtype=np.uint8)
    classes[:half, :half] = 10
    classes[:half, half:] = 50
    classes[half:, :half] = 40
    classes[half:, half:] = 80
    rng = np.random.default_rng(seed)
    rows = rng.integers(half, SIZE, size=60)
    cols = rng.integers(0, half, size=60)
    classes[rows, cols] = 30
    classes[:8, :8] = NODATA
    return classes


def write_landcover(path: Path, seed: int = 0) -> None:
    """Write the fixture GeoTIFF to ``path``."""
    profile = {
        "driver": "GTiff",
        "width": SIZE,
        "height": SIZE,
        "count": 1,
        "dtype": "uint8",
        "crs": CRS,
        "transform": from_origin(*ORIGIN, PIXEL, PIXEL),
        "nodata": NODATA,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(landcover_array(seed), 1)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/data/landcover_fixture.py OUT.tif")
    write_landcover(Path(sys.argv[1]))
