"""``area.geojson`` read without geopandas: the same shape geopandas reads, every GeoJSON form."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pytest
import shapely
from shapely.geometry import box, mapping

from geoweave.errors import FatalError
from geoweave.sources.area_file import read_area
from tests.conftest import SHARED

ISLAND = SHARED / "helsinki" / "seurasaari_island_osm_way36911729.geojson"


def _by_geopandas(path: Path) -> shapely.Geometry:
    return shapely.union_all(gpd.read_file(path).to_crs("EPSG:4326").geometry.values)


def _write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_a_real_feature_collection_reads_as_geopandas_reads_it() -> None:
    ours, theirs = read_area(ISLAND), _by_geopandas(ISLAND)
    assert ours.geom_type == theirs.geom_type == "Polygon"
    assert shapely.equals_exact(ours, theirs, tolerance=1e-12)


def test_bare_geometry_feature_and_collection_with_a_null_geometry(tmp_path: Path) -> None:
    a, b = box(24.0, 60.0, 24.1, 60.1), box(24.05, 60.05, 24.2, 60.2)
    bare = _write(tmp_path / "bare.geojson", mapping(a))
    feature = _write(tmp_path / "f.geojson", {"type": "Feature", "geometry": mapping(a)})
    features = [{"type": "Feature", "properties": {}, "geometry": mapping(g)} for g in (a, b)]
    features.append({"type": "Feature", "properties": {}, "geometry": None})
    both = _write(tmp_path / "fc.geojson", {"type": "FeatureCollection", "features": features})
    assert shapely.equals(read_area(bare), a) and shapely.equals(read_area(feature), a)
    assert shapely.equals(read_area(both), a.union(b))
    assert shapely.equals(read_area(both), _by_geopandas(both))


def test_a_legacy_crs_member_is_reprojected_to_lonlat(tmp_path: Path) -> None:
    from pyproj import Transformer

    to_3857 = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True)
    x0, y0 = to_3857.transform(24.0, 60.0)
    x1, y1 = to_3857.transform(24.1, 60.1)
    crs = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::3857"}}
    path = _write(tmp_path / "m.geojson", {"type": "FeatureCollection", "crs": crs, "features": [
        {"type": "Feature", "properties": {}, "geometry": mapping(box(x0, y0, x1, y1))}]})  # fmt: skip
    west, south, east, north = read_area(path).bounds
    assert (west, south, east, north) == pytest.approx((24.0, 60.0, 24.1, 60.1), abs=1e-9)


def test_a_geopackage_is_read_with_geopandas(tmp_path: Path) -> None:
    path = tmp_path / "area.gpkg"
    gpd.GeoDataFrame(geometry=[box(24.0, 60.0, 24.1, 60.1)], crs="EPSG:4326").to_file(path)
    assert shapely.equals(read_area(path), box(24.0, 60.0, 24.1, 60.1))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"type": "FeatureCollection", "features": []}, "empty"),
        ({"features": []}, "cannot read it .*no type"),
        ({"type": "Polygon", "coordinates": "x"}, "cannot read it"),
        ({"type": "Feature", "geometry": mapping(box(0, 0, 1, 1)),
          "crs": {"type": "name", "properties": {"name": "EPSG:99999"}}}, "unknown crs"),
    ],
)  # fmt: skip
def test_bad_area_files_name_the_file(tmp_path: Path, data: object, message: str) -> None:
    path = _write(tmp_path / "bad.geojson", data)
    with pytest.raises(FatalError, match=rf"bad\.geojson.*{message}"):
        read_area(path)
