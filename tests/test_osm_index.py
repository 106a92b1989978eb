"""The OSM label index, on a seeded OSM XML fixture and on the real SF Bay and Oakland files."""

from __future__ import annotations

import importlib.util
import json
import random
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import geopandas as gpd
import pytest
import shapely
from shapely.geometry import shape

from geoweave.errors import FatalError
from geoweave.sources import osm, osm_stream
from geoweave.sources.labels import LABEL_COLUMNS
from geoweave.sources.osm import OsmIndex, build_osm_index

HERE = Path(__file__).resolve().parent
SF_BAY = Path(__file__).resolve().parents[1].parent / "shared/data/sf-bay"
PBF = SF_BAY / "sf_bay_osm_overpass_20171020.osm.pbf"
BZ2 = SF_BAY / "West-Oakland.osm.bz2"
PIEDMONT = (-122.235, 37.821, -122.229, 37.827)

needs_sample = pytest.mark.skipif(not PBF.exists(), reason="shared SF Bay sample not present")


def _fixture_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("osm_fixture", HERE / "data/osm_fixture.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fixture_osm(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    path = tmp_path_factory.mktemp("osm") / "fixture.osm"
    return path, _fixture_module().write_osm_xml(path, seed=0)


@pytest.fixture(scope="module")
def index(
    fixture_osm: tuple[Path, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> OsmIndex:
    # 0.001-degree cells, so the crossing line lies in two cells.
    return build_osm_index(fixture_osm[0], tmp_path_factory.mktemp("cache"), cell_deg=0.001)


def _expected(info: dict[str, Any], bbox: tuple[float, float, float, float]) -> set[str]:
    box = shapely.box(*bbox)
    return {fid for fid, geom in info["geometries"].items() if shape(geom).intersects(box)}


def test_keeps_tracked_elements_with_their_geometry_and_tags(
    fixture_osm: tuple[Path, dict[str, Any]], index: OsmIndex
) -> None:
    info = fixture_osm[1]
    found = index.query(info["bbox"])
    assert list(found.columns) == list(LABEL_COLUMNS)
    assert found.crs == "EPSG:4326"
    assert set(found["id"]) == set(info["geometries"])
    assert found["id"].is_unique
    rows = found.set_index("id")
    for fid, geom in info["geometries"].items():
        assert rows.loc[fid, "tags"] == info["tags"][fid]
        assert rows.loc[fid, "geometry"].geom_type == geom["type"]
        assert rows.loc[fid, "geometry"].equals(shape(geom)), fid
    assert not set(info["dropped"]) & set(found["id"])
    assert info["missing_node_way"] not in set(found["id"])
    assert info["missing_node_area"] not in set(found["id"])


def test_area_kinds_and_counts(fixture_osm: tuple[Path, dict[str, Any]], index: OsmIndex) -> None:
    info = fixture_osm[1]
    rows = index.query(info["bbox"]).set_index("id")
    areas = [*info["buildings"], info["park"], info["pedestrian_area"], info["water"]]
    assert all(rows.loc[fid, "geometry"].geom_type == "Polygon" for fid in areas)
    # A closed highway without area=yes stays a line, and only once.
    assert rows.loc[info["highway_ring"], "geometry"].geom_type == "LineString"
    counts = index.meta["counts"]
    assert counts["points"] == len(info["amenities"])
    assert counts["areas_from_relations"] == 1
    assert counts["areas_from_ways"] == len(areas) - 1
    assert counts["area_ways"] == counts["areas_from_ways"] + 1  # the hut with a missing node
    assert counts["lines"] == len(info["highways"]) + 2  # the ring and the railway
    assert counts["skipped_invalid_location"] == 1
    assert index.meta["osm_timestamp"] == "2024-05-01T12:00:00Z"


def test_multipolygon_relation_keeps_its_hole(
    fixture_osm: tuple[Path, dict[str, Any]], index: OsmIndex
) -> None:
    info = fixture_osm[1]
    water = index.query(info["bbox"]).set_index("id").loc[info["water"], "geometry"]
    assert len(water.interiors) == 1
    assert water.area == pytest.approx(0.004**2 - 0.002**2, rel=1e-6)
    assert info["water"].startswith("r")


def test_query_returns_exactly_the_intersecting_features(
    fixture_osm: tuple[Path, dict[str, Any]], index: OsmIndex
) -> None:
    info = fixture_osm[1]
    rng = random.Random(1)
    west, south, east, north = info["bbox"]
    for _ in range(40):
        x, y = rng.uniform(west, east), rng.uniform(south, north)
        bbox = (x, y, x + rng.uniform(0.0005, 0.008), y + rng.uniform(0.0005, 0.008))
        found = index.query(bbox)
        assert set(found["id"]) == _expected(info, bbox), bbox
        assert found["id"].is_unique
    assert len(index.query((-121.0, 36.0, -120.9, 36.1))) == 0


def test_feature_spanning_two_cells_is_stored_twice_and_returned_once(
    fixture_osm: tuple[Path, dict[str, Any]], index: OsmIndex
) -> None:
    crossing = fixture_osm[1]["crossing_line"]
    stored = gpd.read_parquet(index.root / "cells")
    assert sorted(stored.loc[stored["id"] == crossing, "cell"].astype(str)) == [
        "-122298_37808",
        "-122299_37808",
    ]
    for bbox in [(-122.2995, 37.808, -122.2965, 37.809), (-122.2975, 37.808, -122.2970, 37.809)]:
        found = index.query(bbox)
        assert list(found["id"]).count(crossing) == 1


def test_features_over_many_cells_go_to_the_shared_partition(
    fixture_osm: tuple[Path, dict[str, Any]], index: OsmIndex, tmp_path: Path
) -> None:
    fine = build_osm_index(fixture_osm[0], tmp_path, cell_deg=0.0001)
    assert (fine.root / "cells" / f"cell={osm.BIG_CELL}").is_dir()
    rng = random.Random(2)
    for _ in range(10):
        x, y = -122.30 + rng.uniform(-0.01, 0.005), 37.80 + rng.uniform(-0.01, 0.005)
        bbox = (x, y, x + 0.003, y + 0.003)
        assert sorted(fine.query(bbox)["id"]) == sorted(index.query(bbox)["id"])


def test_second_build_reuses_the_index(
    fixture_osm: tuple[Path, dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = build_osm_index(fixture_osm[0], tmp_path)
    stamp = (first.root / "meta.json").stat().st_mtime_ns

    def no_reading(*args: object, **kwargs: object) -> None:
        raise AssertionError("the OSM file was read again")

    monkeypatch.setattr(osm, "stream_batches", no_reading)
    second = build_osm_index(fixture_osm[0], tmp_path)
    assert second.root == first.root
    assert (second.root / "meta.json").stat().st_mtime_ns == stamp
    assert second.meta == first.meta
    assert second.checksum == first.checksum == first.meta["checksum"]
    assert [p.name for p in tmp_path.iterdir()] == [first.root.name]


def test_the_cache_key_reads_samples_not_the_whole_file_and_verify_hashes_it(
    fixture_osm: tuple[Path, dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib
    import os
    import shutil

    path = tmp_path / "copy.osm"
    shutil.copy2(fixture_osm[0], path)
    first = build_osm_index(path, tmp_path / "cache")
    assert first.meta["checksum"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert first.meta["fingerprint"].startswith(f"{path.stat().st_size}-{path.stat().st_mtime_ns}-")
    hashed: list[Path] = []
    monkeypatch.setattr(osm, "file_sha256", lambda p: hashed.append(p) or "x")
    assert build_osm_index(path, tmp_path / "cache").root == first.root and hashed == []
    monkeypatch.undo()
    # sample two 16-byte blocks only, then change a middle byte keeping size and mtime
    from geoweave.sources import checksums

    monkeypatch.setattr(checksums, "SAMPLE_BLOCKS", 2)
    monkeypatch.setattr(checksums, "SAMPLE_BYTES", 16)
    sampled = build_osm_index(path, tmp_path / "cache")
    data = bytearray(path.read_bytes())
    middle = data.index(b'v="', len(data) // 2) + 3
    data[middle] = ord("Q") if data[middle] != ord("Q") else ord("R")
    st = path.stat()
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert build_osm_index(path, tmp_path / "cache").checksum == sampled.checksum  # unseen
    verified = build_osm_index(path, tmp_path / "cache", verify=True)
    assert verified.root == sampled.root
    assert verified.checksum == hashlib.sha256(bytes(data)).hexdigest() != sampled.checksum
    stamp = (verified.root / "meta.json").stat().st_mtime_ns
    again = build_osm_index(path, tmp_path / "cache", verify=True)  # now it holds: not rebuilt
    assert (again.root / "meta.json").stat().st_mtime_ns == stamp


def test_a_file_streamed_in_many_batches_and_node_locations_on_disk_give_the_same_index(
    fixture_osm: tuple[Path, dict[str, Any]],
    index: OsmIndex,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pyarrow.parquet as pq

    monkeypatch.setattr(osm_stream, "BATCH_SIZE", 3)  # many small row groups per partition
    monkeypatch.setattr(osm_stream, "DISK_LOCATIONS_BYTES", 0)  # node locations in a file
    assert osm_stream.location_storage(fixture_osm[0], tmp_path).startswith("sparse_file_array,")
    small = build_osm_index(fixture_osm[0], tmp_path / "cache", cell_deg=0.001)
    assert small.meta["counts"]["partitions_compacted"] > 0
    for part in (small.root / "cells").glob("cell=*"):
        files = list(part.glob("*.parquet"))
        assert len(files) == 1 and pq.ParquetFile(files[0]).num_row_groups == 1
    bbox = fixture_osm[1]["bbox"]
    assert sorted(small.query(bbox)["id"]) == sorted(index.query(bbox)["id"])
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [small.root.name]  # no scratch
    monkeypatch.setattr(osm_stream, "DENSE_LOCATIONS_BYTES", 0)
    assert osm_stream.location_storage(fixture_osm[0], tmp_path).startswith("dense_file_array,")


def test_other_parameters_and_broken_index_are_rebuilt(
    fixture_osm: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    first = build_osm_index(fixture_osm[0], tmp_path)
    other = build_osm_index(fixture_osm[0], tmp_path, tag_keys=["building"])
    assert other.root != first.root
    assert {next(iter(tags)) for tags in other.query(fixture_osm[1]["bbox"])["tags"]} == {
        "building"
    }
    (first.root / "meta.json").write_text("{not json")
    rebuilt = build_osm_index(fixture_osm[0], tmp_path)
    assert rebuilt.root == first.root
    assert rebuilt.meta["checksum"] == first.checksum


def test_missing_file_is_fatal(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.osm.pbf"
    with pytest.raises(FatalError, match=r"nowhere\.osm\.pbf"):
        build_osm_index(missing, tmp_path / "cache")


@needs_sample
def test_truncated_pbf_is_fatal_and_leaves_nothing(tmp_path: Path) -> None:
    data = PBF.read_bytes()
    truncated = tmp_path / "truncated.osm.pbf"
    truncated.write_bytes(data[: len(data) // 2])
    cache = tmp_path / "cache"
    with pytest.raises(FatalError, match=r"truncated\.osm\.pbf") as err:
        build_osm_index(truncated, cache)
    assert "download it again" in str(err.value)
    assert list(cache.iterdir()) == []


def test_failure_after_written_batches_leaves_nothing(
    fixture_osm: tuple[Path, dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = osm.stream_batches

    def fails_late(*args: Any, **kwargs: Any) -> Iterator[Any]:
        yield from real(*args, **kwargs)  # every batch is written first
        raise RuntimeError("PBF error: unexpected EOF")

    monkeypatch.setattr(osm_stream, "BATCH_SIZE", 4)
    monkeypatch.setattr(osm, "stream_batches", fails_late)
    with pytest.raises(FatalError, match="unexpected EOF"):
        build_osm_index(fixture_osm[0], tmp_path)
    assert list(tmp_path.iterdir()) == []


@needs_sample
def test_sf_bay_pbf(tmp_path: Path) -> None:
    index = build_osm_index(PBF, tmp_path)
    found = index.query((-122.4668, 37.7402, -122.1977, 37.8409))
    kinds = found.geometry.geom_type
    buildings = found[found["tags"].map(lambda t: "building" in t) & (kinds == "Polygon")]
    highways = found[found["tags"].map(lambda t: "highway" in t) & (kinds == "LineString")]
    assert 5_000 <= len(buildings) <= 5_400
    assert len(highways) > 4_000
    piedmont = index.query(PIEDMONT)
    assert piedmont["tags"].map(lambda t: t.get("building") is not None).sum() > 10
    meta = json.loads((index.root / "meta.json").read_text())
    assert meta["checksum"] == index.checksum and meta["input"] == str(PBF.resolve())


@needs_sample
def test_west_oakland_bz2(tmp_path: Path) -> None:
    index = build_osm_index(BZ2, tmp_path)
    found = index.query((-122.3143, 37.8040, -122.2908, 37.8176))
    assert len(found) > 50
    assert set(found.geometry.geom_type) == {"Point", "LineString", "Polygon"}
    assert index.meta["osm_timestamp"] == "2016-07-12T16:09:43Z"
