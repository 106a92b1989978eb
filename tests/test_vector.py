"""Vector label files as a label source, on the real Seurasaari outline and broken files."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pytest
from shapely.geometry import Point, box

from geoweave.errors import FatalError
from geoweave.sources.labels import LABEL_COLUMNS
from geoweave.sources.vector import VectorLabelSource

HELSINKI = Path(__file__).resolve().parents[1].parent / "shared/data/helsinki"
ISLAND = HELSINKI / "seurasaari_island_osm_way36911729.geojson"
ISLAND_BBOX = (24.8787, 60.1759, 24.8909, 60.1864)

needs_sample = pytest.mark.skipif(not ISLAND.exists(), reason="shared Helsinki sample not present")


@needs_sample
def test_island_query_returns_the_island_with_tags() -> None:
    source = VectorLabelSource(ISLAND)
    assert source.name == "seurasaari_island_osm_way36911729"
    found = source.query(ISLAND_BBOX)
    assert list(found.columns) == list(LABEL_COLUMNS)
    assert found.crs == "EPSG:4326"
    assert len(found) == 1
    island = found.iloc[0]
    assert island["id"] == "seurasaari_island_osm_way36911729:36911729"  # from osm_id
    assert island["tags"]["osm_type"] == "way"
    assert island["tags"]["display_name"].startswith("Seurasaari, Meilahti")
    assert "osm_id" not in island["tags"]
    assert all(isinstance(v, str) for v in island["tags"].values())
    assert island.geometry.geom_type == "Polygon"
    assert island.geometry.contains(Point(24.884, 60.181))


@needs_sample
def test_query_far_away_is_empty_with_label_columns() -> None:
    found = VectorLabelSource(ISLAND, name="island").query((0.0, 0.0, 1.0, 1.0))
    assert found.empty
    assert list(found.columns) == list(LABEL_COLUMNS)


@needs_sample
def test_tag_columns_select_tags() -> None:
    source = VectorLabelSource(ISLAND, name="island", tag_columns=["osm_type", "osm_id"])
    island = source.query(ISLAND_BBOX).iloc[0]
    assert island["id"] == "island:36911729"
    assert island["tags"] == {"osm_type": "way", "osm_id": "36911729"}
    with pytest.raises(FatalError, match=r"no column.*height"):
        VectorLabelSource(ISLAND, tag_columns=["height"])


def test_geoparquet_in_utm_is_reprojected_with_row_ids(tmp_path: Path) -> None:
    frame = gpd.GeoDataFrame(
        {"landuse": ["forest", None], "height": [12.0, float("nan")]},
        geometry=[box(382400, 6673000, 382600, 6673200), box(0, 0, 10, 10)],
        crs="EPSG:32635",
    )
    path = tmp_path / "plots.parquet"
    frame.to_parquet(path)
    source = VectorLabelSource(path)
    found = source.query(ISLAND_BBOX)
    assert found["id"].tolist() == ["plots:0"]
    assert found.iloc[0]["tags"] == {"landuse": "forest", "height": "12"}
    assert source.labels.iloc[1]["tags"] == {}


def test_geojson_without_geometry_is_fatal(tmp_path: Path) -> None:
    path = tmp_path / "no_geometry.geojson"
    feature = {"type": "Feature", "properties": {"name": "x"}, "geometry": None}
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    with pytest.raises(FatalError, match=r"no_geometry\.geojson.*no features with a geometry"):
        VectorLabelSource(path)


def test_broken_json_is_fatal(tmp_path: Path) -> None:
    path = tmp_path / "broken.geojson"
    path.write_text('{"type": "FeatureCollection", "features": [')
    with pytest.raises(FatalError, match=r"broken\.geojson"):
        VectorLabelSource(path)


def test_missing_file_and_missing_crs_are_fatal(tmp_path: Path) -> None:
    with pytest.raises(FatalError, match=r"absent\.gpkg.*not found"):
        VectorLabelSource(tmp_path / "absent.gpkg")
    path = tmp_path / "no_crs.parquet"
    gpd.GeoDataFrame({"a": [1]}, geometry=[Point(1, 2)]).to_parquet(path)
    with pytest.raises(FatalError, match=r"no_crs\.parquet has no CRS"):
        VectorLabelSource(path)


def test_a_file_with_a_repeated_id_is_not_joined_by_id(tmp_path: Path) -> None:
    """The join keeps features by id for a source with ``fixed_features``; a file whose id
    column repeats a value must not claim it, or one feature would stand for the other."""
    from geoweave.builders.join import ShardLabels
    from geoweave.tile import Tile, transformer

    boxes = [box(24.8800, 60.1800, 24.8805, 60.1802), box(24.8830, 60.1800, 24.8835, 60.1802)]

    def write(path: Path, ids: list[str]) -> Path:
        gpd.GeoDataFrame({"id": ids, "landuse": ["grass", "forest"]}, geometry=boxes,
                         crs="EPSG:4326").to_file(path)  # fmt: skip
        return path

    unique = VectorLabelSource(write(tmp_path / "u.geojson", ["a", "b"]))
    repeated = VectorLabelSource(write(tmp_path / "r.geojson", ["a", "a"]))
    assert unique.fixed_features and not repeated.fixed_features
    crs, to_utm = "EPSG:32635", transformer("EPSG:4326", "EPSG:32635")
    for source in (unique, repeated):  # one shard over each box: each gets its own feature
        for b, landuse in zip(boxes, ["grass", "forest"], strict=True):
            x, y = to_utm.transform(*b.centroid.coords[0])
            tile = Tile(f"t{x}", "t", crs, 1.0, 16, int(x // 16), int(y // 16))
            (element,) = ShardLabels([source], [tile]).for_tile(tile, min_pixels=1.0)
            assert element["tags"] == {"landuse": landuse}
