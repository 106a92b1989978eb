"""A vector label file that covers a fixture raster, so every tile has something to caption."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import shapely

from tests.data.raster_fixture import ORIGIN


def write_cover(path: Path, size_m: float, tags: dict[str, str] | None = None) -> Path:
    """One polygon (default ``landuse=grass``) over ``size_m`` x ``size_m`` from the fixture
    rasters' origin (their top-left corner, in EPSG:32610), with a 100 m margin."""
    x, y = ORIGIN
    poly = shapely.box(x - 100, y - size_m - 100, x + size_m + 100, y + 100)
    columns = {k: [v] for k, v in (tags or {"landuse": "grass"}).items()}
    gpd.GeoDataFrame(columns, geometry=[poly], crs="EPSG:32610").to_file(path)
    return path
