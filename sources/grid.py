"""The tile grid: deterministic cells in a metric CRS, one grid per GSD.

A cell's origin is a multiple of the tile's ground size, so the same cell gets the same key in
every run and every area: ``{source}_{gsd}m_{epsg}_{col}_{row}``.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import shapely
from pyproj import CRS
from shapely.geometry.base import BaseGeometry

from geoweave.tile import transformer


def utm_crs(lon: float, lat: float) -> str:
    """The WGS 84 / UTM zone CRS of a point, as ``EPSG:326zz`` or ``EPSG:327zz``."""
    zone = min(int((lon + 180) // 6) + 1, 60)
    return f"EPSG:{32600 + zone if lat >= 0 else 32700 + zone}"


def grid_crs_for(area_lonlat: BaseGeometry, setting: str) -> str:
    """Resolve the recipe's ``tiles.grid_crs`` to a concrete metric CRS."""
    if setting.lower() == "utm":
        c = area_lonlat.centroid
        return utm_crs(c.x, c.y)
    crs = CRS.from_user_input(setting)
    if not crs.is_projected:
        raise ValueError(f"tiles.grid_crs must be a projected (metric) CRS, got {setting}")
    return crs.to_string()


def transform_geom(geom: Any, src: str, dst: str) -> Any:
    """Reproject a shapely geometry, or an array of them, between two CRSs."""
    t = transformer(src, dst)
    return shapely.transform(geom, lambda xy: np.column_stack(t.transform(xy[:, 0], xy[:, 1])))


def cells_over(area_lonlat: BaseGeometry, crs: str, ground_m: float) -> list[tuple[int, int]]:
    """Grid cells (col, row) of size ``ground_m`` whose square intersects the area."""
    area = transform_geom(shapely.segmentize(area_lonlat, 0.01), "EPSG:4326", crs)
    minx, miny, maxx, maxy = area.bounds
    cols = range(math.floor(minx / ground_m), math.ceil(maxx / ground_m))
    rows = range(math.floor(miny / ground_m), math.ceil(maxy / ground_m))
    shapely.prepare(area)
    cells: list[tuple[int, int]] = []
    xs = np.arange(cols.start, cols.stop)
    for row in rows:  # one vectorised test per row of cells
        boxes = shapely.box(
            xs * ground_m, row * ground_m, (xs + 1) * ground_m, (row + 1) * ground_m
        )
        cells.extend((int(c), row) for c in xs[shapely.intersects(area, boxes)])
    return cells


@functools.lru_cache(maxsize=64)
def epsg_code(crs: str) -> int:
    return CRS.from_user_input(crs).to_epsg() or 0


def tile_key(source: str, gsd_m: float, crs: str, col: int, row: int) -> str:
    return f"{source}_{gsd_m:g}m_{epsg_code(crs)}_{col}_{row}".replace(".", "p")
