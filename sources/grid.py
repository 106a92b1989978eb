"""The tile grid: deterministic cells in a metric CRS, one grid per GSD.

A cell's origin is a multiple of the tile's ground size, so the same cell gets the same key in
every run and every area: ``{source}_{gsd}m_{epsg}_{col}_{row}``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import shapely
from pyproj import CRS
from shapely.geometry import Polygon
from shapely.geometry.base import BaseGeometry

from geoweave.tile import grid_id, transformer


def utm_crs(lon: float, lat: float) -> str:
    """The WGS 84 / UTM zone CRS of a point, as ``EPSG:326zz`` or ``EPSG:327zz``."""
    zone = min(int((lon + 180) // 6) + 1, 60)
    return f"EPSG:{32600 + zone if lat >= 0 else 32700 + zone}"


def grid_crs_for(area_lonlat: BaseGeometry, setting: str) -> str:
    """Resolve the recipe's ``tiles.grid_crs`` to a concrete metric CRS."""
    if setting.lower() == "utm":
        return utm_crs(*lonlat_centroid(area_lonlat))
    crs = CRS.from_user_input(setting)
    if not crs.is_projected:
        raise ValueError(f"tiles.grid_crs must be a projected (metric) CRS, got {setting}")
    return crs.to_string()


def _unwrap(geom: BaseGeometry) -> BaseGeometry:
    """Negative longitudes moved east by 360 degrees (a geometry across the antimeridian
    becomes one piece in 0..360)."""
    return shapely.transform(
        geom,
        lambda xy: np.column_stack([np.where(xy[:, 0] < 0, xy[:, 0] + 360, xy[:, 0]), xy[:, 1]]),
    )


def crosses_antimeridian(geom: BaseGeometry) -> bool:
    """A lon/lat geometry with an edge jumping over 180 degrees of longitude: drawn across the
    antimeridian (179 -> -179), not around the world."""
    for part in getattr(geom, "geoms", [geom]):
        rings = [part.exterior, *part.interiors] if isinstance(part, Polygon) else [part]
        for ring in rings:
            xs = np.asarray(ring.coords)[:, 0] if hasattr(ring, "coords") else np.empty(0)
            if xs.size > 1 and np.abs(np.diff(xs)).max() > 180:
                return True
    return False


def split_antimeridian(geom: BaseGeometry) -> BaseGeometry:
    """A lon/lat area as RFC 7946 wants it: each polygon drawn across the antimeridian split
    into its parts east and west of it (otherwise it reads as a strip around the world)."""
    parts = []
    for part in getattr(geom, "geoms", [geom]):
        if not crosses_antimeridian(part):
            parts.append(part)
            continue
        whole = _unwrap(part)
        parts.append(whole.intersection(shapely.box(-180, -90, 180, 90)))
        west = whole.intersection(shapely.box(180, -90, 540, 90))
        parts.append(shapely.transform(west, lambda xy: xy - np.array([360.0, 0.0])))
    return shapely.union_all([p for p in parts if not p.is_empty])


def bbox_geometry(bbox: tuple[float, float, float, float]) -> BaseGeometry:
    """A lon/lat box (west, south, east, north) as a geometry; west > east crosses the
    antimeridian, as GeoJSON and STAC bboxes say it (RFC 7946, 5.2): the two boxes either side
    of it."""
    w, s, e, n = bbox
    if w > e:
        return shapely.union_all([shapely.box(w, s, 180, n), shapely.box(-180, s, e, n)])
    return shapely.box(w, s, e, n)


def lonlat_centroid(geom: BaseGeometry) -> tuple[float, float]:
    """The centroid of a lon/lat area, right for one on both sides of the antimeridian."""
    w, _, e, _ = geom.bounds
    if e - w > 180:  # parts at both ends of the longitude range: measure in 0..360
        c = _unwrap(geom).centroid
        return ((c.x + 180) % 360) - 180, c.y
    c = geom.centroid
    return c.x, c.y


def transform_geom(geom: Any, src: str, dst: str) -> Any:
    """Reproject a shapely geometry, or an array of them, between two CRSs."""
    t = transformer(src, dst)
    return shapely.transform(geom, lambda xy: np.column_stack(t.transform(xy[:, 0], xy[:, 1])))


def cells_over(area_lonlat: BaseGeometry, crs: str, ground_m: float) -> list[tuple[int, int]]:
    """Grid cells (col, row) of size ``ground_m`` whose square intersects the area."""
    return [
        (int(c), int(r))
        for cols, rows in cells_by_strip(area_lonlat, crs, ground_m, 1)
        for c, r in zip(cols, rows, strict=True)
    ]


def cells_by_strip(
    area_lonlat: BaseGeometry, crs: str, ground_m: float, strip_rows: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The cells (cols, rows) over the area one strip of ``strip_rows`` rows at a time, strips
    from north to south, each strip's cells by column (west to east), then row (north to south).

    A strip is a patch of ground: the area is clipped to it first, so a continent's outline is
    tested piecewise and never more than one strip of cells is held.
    """
    area = transform_geom(shapely.segmentize(area_lonlat, 0.01), "EPSG:4326", crs)
    if area.is_empty:
        return
    minx, miny, maxx, maxy = area.bounds
    xs = np.arange(math.floor(minx / ground_m), math.ceil(maxx / ground_m))
    rows = range(math.floor(miny / ground_m), math.ceil(maxy / ground_m))
    if not rows:
        return
    top, bottom = (rows.stop - 1) // strip_rows, rows.start // strip_rows
    for strip in range(top, bottom - 1, -1):
        lo, hi = strip * strip_rows, (strip + 1) * strip_rows
        part = area.intersection(shapely.box(minx, lo * ground_m, maxx, hi * ground_m))
        if part.is_empty:
            continue
        shapely.prepare(part)
        cols, rows_of = [], []
        for row in range(hi - 1, lo - 1, -1):  # one vectorised test per row of cells
            boxes = shapely.box(
                xs * ground_m, row * ground_m, (xs + 1) * ground_m, (row + 1) * ground_m
            )
            hit = xs[shapely.intersects(part, boxes)]
            cols.append(hit)
            rows_of.append(np.full(len(hit), row, dtype=np.int64))
        c, r = np.concatenate(cols).astype(np.int64), np.concatenate(rows_of)
        order = np.lexsort((-r, c))  # by column, then north to south
        if len(order):
            yield c[order], r[order]


def key_prefix(source: str, gsd_m: float, crs: str) -> str:
    """What every key of one source, GSD and grid starts with (``.`` spelled ``p``)."""
    return f"{source.replace('.', 'p')}_{grid_id(gsd_m, crs)}_"


def tile_key(source: str, gsd_m: float, crs: str, col: int, row: int) -> str:
    return f"{key_prefix(source, gsd_m, crs)}{col}_{row}"
