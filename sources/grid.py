"""The tile grid: deterministic cells in a metric CRS, one grid per GSD.

A cell's origin is a multiple of the tile's ground size, so the same cell gets the same key in
every run and every area: ``{source}_{gsd}m_{epsg}_{col}_{row}``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from affine import Affine
from pyproj import CRS, Transformer
from shapely.geometry.base import BaseGeometry

BBox = tuple[float, float, float, float]


@dataclass(frozen=True, slots=True)
class Tile:
    """One planned tile: a grid cell at one GSD over one imagery source."""

    key: str
    source: str
    crs: str
    gsd_m: float
    size_px: int
    col: int
    row: int
    shard: int = -1
    plan_reject: str | None = None

    @property
    def ground_m(self) -> float:
        return self.gsd_m * self.size_px

    @property
    def bounds(self) -> BBox:
        """(minx, miny, maxx, maxy) in the grid CRS."""
        g = self.ground_m
        return (self.col * g, self.row * g, (self.col + 1) * g, (self.row + 1) * g)

    @property
    def transform(self) -> Affine:
        minx, _, _, maxy = self.bounds
        return Affine(self.gsd_m, 0.0, minx, 0.0, -self.gsd_m, maxy)

    def bbox_lonlat(self) -> BBox:
        return transform_bbox(self.bounds, self.crs, "EPSG:4326")


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


@functools.lru_cache(maxsize=64)
def transformer(src: str, dst: str) -> Transformer:
    """A cached lon/lat-ordered transformer: building one costs ~1 ms, using it microseconds.

    Shard tasks run one per process, so sharing a transformer is safe here (pyproj transformers
    must not be shared between threads).
    """
    return Transformer.from_crs(src, dst, always_xy=True)


def transform_bbox(bbox: BBox, src: str, dst: str) -> BBox:
    """Bounds of a box after reprojection, densified so curved edges are covered."""
    return transformer(src, dst).transform_bounds(*bbox, densify_pts=21)


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
