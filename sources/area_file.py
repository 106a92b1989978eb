"""The recipe's ``area.geojson``: its geometries as one shape in lon/lat.

A GeoJSON file (a FeatureCollection, a Feature, or a bare geometry) is read here with the
standard library and shapely: geopandas takes 0.3 s to import, more than a whole small plan, and
a build that reads no vector labels needs it for nothing else. Coordinates are lon/lat (RFC
7946); a legacy ``crs`` member naming another CRS is reprojected. A file that is not JSON (a
GeoPackage, a Shapefile) is read with geopandas, as before.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.errors import GEOSException
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from geoweave.errors import FatalError

LONLAT = ("EPSG:4326", "OGC:CRS84", "urn:ogc:def:crs:OGC:1.3:CRS84", "urn:ogc:def:crs:EPSG::4326")


def read_area(path: Path) -> BaseGeometry:
    """The union of the file's geometries in EPSG:4326.

    Raises:
        FatalError: the file cannot be read, holds no geometry, or has no CRS.
    """
    try:
        data = json.loads(Path(path).read_bytes())
    except (OSError, ValueError):
        return _with_geopandas(path)  # not JSON (or unreadable: geopandas names the error)
    try:
        geoms = [shape(g) for g in _geometries(data)]
        crs = _crs_name(data)
    except (TypeError, ValueError, AttributeError, KeyError, GEOSException) as e:
        raise FatalError(f"area.geojson {path}: cannot read it ({e})") from e
    if not geoms:
        raise FatalError(f"area.geojson {path}: empty or without a CRS")
    union = shapely.union_all(geoms)
    if crs is None or crs in LONLAT:
        return union
    return _to_lonlat(union, crs, path)


def _geometries(data: Any) -> list[dict[str, Any]]:
    kind = data.get("type") if isinstance(data, dict) else None
    if kind == "FeatureCollection":
        return [g for f in data.get("features") or [] for g in _geometries(f)]
    if kind == "Feature":
        geometry = data.get("geometry")
        return [geometry] if geometry else []
    if kind is None:
        raise ValueError("not a GeoJSON object (no type)")
    return [data]


def _crs_name(data: Any) -> str | None:
    crs = data.get("crs") if isinstance(data, dict) else None
    return str(crs["properties"]["name"]) if crs else None


def _to_lonlat(geom: BaseGeometry, crs: str, path: Path) -> BaseGeometry:
    from pyproj import CRS, Transformer
    from pyproj.exceptions import CRSError

    try:
        source = CRS.from_user_input(crs)
    except CRSError as e:
        raise FatalError(f"area.geojson {path}: unknown crs {crs!r} ({e})") from e
    to_lonlat = Transformer.from_crs(source, "EPSG:4326", always_xy=True)
    return shapely.transform(geom, lambda xy: np.column_stack(to_lonlat.transform(*xy.T)))


def _with_geopandas(path: Path) -> BaseGeometry:
    import geopandas as gpd

    try:
        gdf = gpd.read_file(path)
    except Exception as e:
        raise FatalError(f"area.geojson {path}: cannot read it ({e})") from e
    if gdf.empty or gdf.crs is None:
        raise FatalError(f"area.geojson {path}: empty or without a CRS")
    return shapely.union_all(gdf.to_crs("EPSG:4326").geometry.values)
