"""Label join (coverage, position, clipping, visibility), template captions and QA."""

from __future__ import annotations

import geopandas as gpd
import pytest
import shapely

from geoweave.builders.join import ShardLabels
from geoweave.captioning.questions import TemplateQA, TemplateQAOptions
from geoweave.captioning.templates import TemplateCaptioner, TemplateOptions
from geoweave.protocols import TileDescription
from geoweave.record import OSM_LICENSE, Sample
from geoweave.sources.phrases import element_phrase, phrase, plural
from geoweave.tile import Tile

CRS = "EPSG:32610"
TILE = Tile("t_10m_32610_3600_26000", "t", CRS, 10.0, 32, 3600, 26000)  # a 320 m square
X0, Y0 = 3600 * 320.0, 26000 * 320.0


class FrameSource:
    """A label source over an in-memory GeoDataFrame (the LabelSource protocol)."""

    name = "test"

    def __init__(self, rows: list[tuple[str, dict, shapely.Geometry]]) -> None:
        ids, tags, geoms = zip(*rows, strict=True)
        gdf = gpd.GeoDataFrame({"id": ids, "tags": tags}, geometry=list(geoms), crs=CRS)
        self.gdf = gdf.to_crs("EPSG:4326")

    def query(self, bbox: tuple[float, float, float, float]) -> gpd.GeoDataFrame:
        return self.gdf[self.gdf.intersects(shapely.box(*bbox))]


def _box(x: float, y: float, w: float, h: float) -> shapely.Geometry:
    return shapely.box(X0 + x, Y0 + y, X0 + x + w, Y0 + y + h)


@pytest.fixture
def labels() -> ShardLabels:
    rows = [
        ("w1", {"building": "yes"}, _box(20, 260, 40, 40)),  # top-left, 16 px
        ("w2", {"building": "yes"}, _box(150, 150, 20, 20)),  # centre, 4 px
        ("w3", {"building": "yes"}, _box(250, 10, 5, 5)),  # 0.25 px: not visible
        ("w4", {"landuse": "grass"}, _box(-100, -100, 200, 200)),  # clipped at the corner
        (
            "w5",
            {"highway": "residential"},
            shapely.LineString([(X0 - 10, Y0 + 100), (X0 + 330, Y0 + 100)]),
        ),
        ("n6", {"amenity": "bench"}, shapely.Point(X0 + 100, Y0 + 100)),
        ("w7", {"building": "yes"}, _box(1000, 1000, 50, 50)),  # outside
    ]
    return ShardLabels([FrameSource(rows)], [TILE])


def test_join_coverage_position_clipping_and_visibility(labels: ShardLabels) -> None:
    els = {e["id"]: e for e in labels.for_tile(TILE, min_pixels=1.0)}
    assert set(els) == {"w1", "w2", "w4", "w5"}  # w3 too small, n6 a point, w7 outside
    assert els["w1"]["coverage_px"] == pytest.approx(16, rel=1e-3)
    assert els["w1"]["area_m2"] == pytest.approx(1600, rel=1e-3)
    assert els["w1"]["position"] == "top-left" and not els["w1"]["clipped"]
    assert els["w2"]["position"] == "centre"
    assert els["w4"]["clipped"] and els["w4"]["area_m2"] == pytest.approx(100 * 100, rel=1e-3)
    assert els["w4"]["position"] == "bottom-left" and els["w4"]["geom_type"] == "polygon"
    assert els["w5"]["geom_type"] == "line" and els["w5"]["clipped"]
    assert els["w5"]["length_m"] == pytest.approx(320, rel=1e-3)
    assert els["w5"]["coverage_px"] == pytest.approx(32, rel=1e-3)
    assert next(e["id"] for e in labels.for_tile(TILE, 1.0)) == "w4"  # largest first
    with_points = {e["id"] for e in labels.for_tile(TILE, min_pixels=1.0, points=True)}
    assert "n6" in with_points
    assert {e["id"] for e in labels.for_tile(TILE, min_pixels=10)} == {"w1", "w4", "w5"}


def test_phrases_and_plurals() -> None:
    assert phrase("building", "yes") == "building"
    assert phrase("highway", "residential") == "residential road"
    assert phrase("amenity", "parking") == "parking lot"
    assert phrase("building", "no") is None and phrase("surface", "asphalt") is None
    assert plural("body of water", 3) == "bodies of water"
    assert plural("house", 2) == "houses" and plural("railway line", 2) == "railway lines"
    assert plural("building", 1) == "building"


def _cap(s: Sample, per_sample: int = 2, seed: int = 0) -> list:
    """The template captioner's batch call on one tile's description."""
    (out,) = TemplateCaptioner(TemplateOptions(per_sample=per_sample), seed).caption(
        [TileDescription.of(s)]
    )
    assert not isinstance(out, Exception)
    return out


def _qa(s: Sample, per_sample: int = 4, seed: int = 0) -> list:
    (out,) = TemplateQA(TemplateQAOptions(per_sample=per_sample), seed).questions(
        [TileDescription.of(s)]
    )
    assert not isinstance(out, Exception)
    return out


def _sample(labels: ShardLabels) -> Sample:
    s = Sample(TILE)
    s.osm = labels.for_tile(TILE, 1.0)
    s.landcover = {"Grassland": 0.7, "Built-up": 0.3}
    return s


def test_captions_are_deterministic_and_built_from_labels(labels: ShardLabels) -> None:
    s = _sample(labels)
    a = _cap(s, 3, seed=0)
    assert a == _cap(s, 3, seed=0)
    assert len(a) == 3 and all(c["captioner"] == "template_v1" for c in a)
    text = " ".join(c["text"] for c in a)
    assert "bench" not in text  # points are not visible
    assert any(
        "2 buildings" in c["text"] or "building in the top-left corner" in c["text"] for c in a
    )
    seeds = {tuple(c["text"] for c in _cap(s, 2, seed=k)) for k in range(8)}
    assert len(seeds) > 1  # the seed changes the template choice


def test_qa_answers_are_computed_from_labels(labels: ShardLabels) -> None:
    s = _sample(labels)
    qa = {q["question"]: q for q in _qa(s, 20, seed=0)}
    counts = [q for q in qa.values() if q["kind"] == "count"]
    assert counts
    for q in counts:
        noun = q["question"].removeprefix("How many ").split(" are visible")[0]
        n = sum(plural(element_phrase(e["tags"]) or "", 2) == noun for e in s.osm)
        assert q["answer"] == str(n) and n >= 1
    assert qa["What is the dominant land cover?"]["answer"] == "Grassland"
    yes = [q for q in qa.values() if q["kind"] == "presence" and q["answer"] == "yes"]
    no = [q for q in qa.values() if q["kind"] == "presence" and q["answer"] == "no"]
    assert yes and no
    assert "building" not in no[0]["question"] and "grass" not in no[0]["question"]
    pos = [q for q in qa.values() if q["kind"] == "position"]
    assert pos and pos[0]["answer"] in {"bottom-left", "left", "centre"}
    assert all(q["verified"] for q in qa.values())


def test_license_names_osm_only_when_osm_labels_are_used(labels: ShardLabels) -> None:
    s = _sample(labels)
    s.source_license = "public domain"
    assert OSM_LICENSE not in s.license
    s.osm[0]["source"] = "osm"
    assert s.license == f"public domain; {OSM_LICENSE}"


def test_captions_without_visible_features_use_land_cover_or_nothing() -> None:
    bare = Sample(TILE)
    assert _cap(bare) == []  # the shard rejects it as no_caption
    bare.osm = [{"id": "v:1", "source": "v", "tags": {"display_name": "Seurasaari"}}]
    assert _cap(bare) == []  # free-text attributes are not nouns
    bare.landcover = {"Coniferous forest": 0.4, "Sea": 0.35, "Bare rock": 0.25}
    texts = [c["text"] for c in _cap(bare, 3)]
    assert len(texts) == 3
    assert all("partly coniferous forest (40%)" in t and "Seurasaari" not in t for t in texts)


def test_lines_are_not_counted_in_captions_or_questions(labels: ShardLabels) -> None:
    s = _sample(labels)
    road = next(e for e in s.osm if e["geom_type"] == "line")
    s.osm.append({**road, "id": "w99"})  # the same road, split into two OSM ways
    texts = [c["text"] for c in _cap(s, 5)]
    assert any("residential roads" in t for t in texts)
    assert not any("2 residential roads" in t for t in texts)
    questions = [q["question"] for q in _qa(s, 20) if q["kind"] == "count"]
    assert questions and not any("road" in q for q in questions)


def test_a_batch_join_equals_each_tile_joined_alone(labels: ShardLabels) -> None:
    """``for_tiles`` answers for many tiles at once (one bulk tree query): each tile's
    elements, order included, are what the tile gets on its own, at every threshold."""
    from dataclasses import replace

    tiles = [
        replace(TILE, col=TILE.col + dc, row=TILE.row + dr)
        for dc in (-1, 0, 1)
        for dr in (-1, 0, 1)
    ]
    for min_pixels, points in ((1.0, False), (1.0, True), (10.0, False), (0.0, True)):
        batch = labels.for_tiles(tiles, min_pixels, points)
        assert batch == [labels.for_tiles([t], min_pixels, points)[0] for t in tiles]
        assert batch[4] == labels.for_tile(TILE, min_pixels, points) and batch[4]
    assert labels.for_tiles([], 1.0) == []


class FixedSource(FrameSource):
    fixed_features = True  # the join may keep its cleaned, reprojected features


class ClippingSource(FrameSource):
    """Returns each feature clipped to the box asked for: the same id, other geometries."""

    def query(self, bbox: tuple[float, float, float, float]) -> gpd.GeoDataFrame:
        found = super().query(bbox).copy()
        found["geometry"] = found.geometry.intersection(shapely.box(*bbox))
        return found


def test_fixed_features_are_reprojected_once_per_process_and_join_the_same() -> None:
    from dataclasses import replace

    rows = [
        ("w1", {"building": "yes\u202e"}, _box(20, 260, 40, 40)),  # a bidi control: cleaned
        ("w4", {"landuse": "grass"}, _box(-100, -100, 700, 200)),  # across two tiles
    ]
    east = replace(TILE, col=TILE.col + 1)
    fixed, plain = FixedSource(rows), FrameSource(rows)
    first, second = ShardLabels([fixed], [TILE]), ShardLabels([fixed], [east])
    by_id = {i: g for i, g in zip(first.ids, first.geoms, strict=True)}
    assert second.geoms[list(second.ids).index("w4")] is by_id["w4"]  # not reprojected again
    for tile, shard in ((TILE, first), (east, second)):
        assert shard.for_tile(tile, 1.0) == ShardLabels([plain], [tile]).for_tile(tile, 1.0)
    assert first.for_tile(TILE, 1.0)[-1]["tags"] == {"building": "yes"}
    # Without the flag nothing is kept: a source that clips to the box asked for gets its own
    # geometry for each shard.
    clipping = ClippingSource(rows)
    a, b = ShardLabels([clipping], [TILE]), ShardLabels([clipping], [east])
    assert a.geoms[list(a.ids).index("w4")] is not b.geoms[list(b.ids).index("w4")]
    assert not shapely.equals(a.geoms[list(a.ids).index("w4")], b.geoms[list(b.ids).index("w4")])
