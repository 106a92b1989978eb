"""Tile grid, plan and imagery reads on seeded GeoTIFF fixtures."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely

from geoweave.builders.plan import plan_tiles
from geoweave.builders.recipe import Recipe
from geoweave.errors import FatalError
from geoweave.sources.grid import tile_key, utm_crs
from geoweave.sources.imagery import GeoTiffSource
from geoweave.tile import Tile, transformer
from tests.conftest import SF_BAY
from tests.data.raster_fixture import (
    ORIGIN,
    write_corrupt,
    write_float,
    write_no_crs,
    write_rgb,
    write_uint16,
)

SF_LANDSAT = SF_BAY / "sf_bay_landsat7_falsecolor_30m.tif"


def _recipe(path: Path, **tiles: object) -> Recipe:
    return Recipe.model_validate(
        {
            "name": "t",
            "imagery": [{"name": "img", "path": str(path), "scale": "none"}],
            "tiles": {"size_px": 16, "gsd_m": [10], **tiles},
            "output": {"samples_per_shard": 5},
        }
    )


def test_utm_zone_and_stable_keys() -> None:
    assert utm_crs(-122.3, 37.8) == "EPSG:32610"
    assert utm_crs(24.9, 60.2) == "EPSG:32635"
    assert utm_crs(151.2, -33.9) == "EPSG:32756"
    assert tile_key("img", 2.5, "EPSG:32610", 3, -4) == "img_2p5m_32610_3_-4"


def test_plan_is_deterministic_and_shards_are_filled_in_order(tmp_path: Path) -> None:
    src = GeoTiffSource("img", write_rgb(tmp_path / "a.tif"), [1, 2, 3], "none")
    recipe = _recipe(tmp_path / "a.tif", gsd_m=[10, 20])
    a, b = plan_tiles(recipe, [src]), plan_tiles(recipe, [src])
    assert a.load_tiles() == b.load_tiles() and a.digest == b.digest
    keys = [t.key for t in a.load_tiles()]
    assert len(keys) == len(set(keys))
    assert {t.gsd_m for t in a.load_tiles()} == {10.0, 20.0}
    assert [len(a.shard_tiles(s)) for s in range(a.num_shards - 1)] == [5] * (a.num_shards - 1)
    # 96 px at 10 m = 960 m square; the default area is its lon/lat bounding box, a little
    # larger once back in UTM: 7 x 7 to 8 x 8 cells of 160 m at 10 m GSD.
    n10 = sum(t.gsd_m == 10 for t in a.load_tiles())
    assert 49 <= n10 <= 64


def test_only_tiles_over_the_imagery_are_planned(tmp_path: Path) -> None:
    src = GeoTiffSource("img", write_rgb(tmp_path / "a.tif"), [1, 2, 3], "none")
    w, s, e, n = src.bounds_lonlat
    recipe = _recipe(tmp_path / "a.tif").model_copy(
        update={"area": Recipe.model_fields["area"].annotation(bbox=(w, s, e + (e - w), n))}  # type: ignore[misc]
    )
    plan = plan_tiles(recipe, [src])
    inside = plan_tiles(_recipe(tmp_path / "a.tif"), [src])
    assert plan.load_tiles() and all(t.plan_reject is None for t in plan.load_tiles())
    assert {t.key for t in plan.load_tiles()} == {t.key for t in inside.load_tiles()}
    assert all(t.bbox_lonlat()[0] < e for t in plan.load_tiles())


def test_a_continent_over_one_small_image_plans_only_the_image(tmp_path: Path) -> None:
    import time

    src = GeoTiffSource("img", write_rgb(tmp_path / "a.tif"), [1, 2, 3], "none")
    recipe = _recipe(tmp_path / "a.tif", grid_crs="EPSG:32610").model_copy(
        update={"area": Recipe.model_fields["area"].annotation(bbox=(-130, 30, -100, 50))}  # type: ignore[misc]
    )
    t = time.perf_counter()
    plan = plan_tiles(recipe, [src])
    assert time.perf_counter() - t < 10  # the cells of the continent are never enumerated
    assert {t.key for t in plan.load_tiles()} == {
        t.key
        for t in plan_tiles(_recipe(tmp_path / "a.tif", grid_crs="EPSG:32610"), [src]).load_tiles()
    }


def test_read_tile_reprojects_and_reports_nodata(tmp_path: Path) -> None:
    path = write_rgb(tmp_path / "a.tif", nodata_cols=16)
    src = GeoTiffSource("img", path, [1, 2, 3], "none")
    # A tile aligned with the raster's own grid (same CRS, 10 m) reads back the exact pixels.
    col, row = int(ORIGIN[0] // 160) + 1, int(ORIGIN[1] // 160) - 2
    tile = Tile("k", "img", "EPSG:32610", 10.0, 16, col, row)
    px = src.read_tile(tile)
    with rasterio.open(path) as ds:
        win = ds.window(*tile.bounds)
        direct = ds.read(window=win)
    assert px.data.shape == (3, 16, 16)
    np.testing.assert_array_equal(px.data[:, px.valid], direct[:, px.valid])
    expect_valid = (direct != 0).any(axis=0)
    np.testing.assert_array_equal(px.valid, expect_valid)
    assert px.nodata_fraction == pytest.approx(1 - expect_valid.mean())
    assert 0 < px.nodata_fraction < 1
    rgb = src.to_rgb8(px)
    assert rgb.shape == (16, 16, 3) and rgb.dtype == np.uint8
    assert (rgb[~px.valid] == 0).all()


def test_coarser_gsd_averages_and_auto_stretch_spans_uint16(tmp_path: Path) -> None:
    src = GeoTiffSource("s2", write_uint16(tmp_path / "u.tif"), [3, 2, 1], "auto")
    lo, hi = src.stretch
    assert (lo > 200).all() and (hi < 3000).all() and (hi > lo).all()
    tile = Tile(
        "k", "s2", "EPSG:32610", 40.0, 4, int(ORIGIN[0] // 160) + 1, int(ORIGIN[1] // 160) - 1
    )
    px = src.read_tile(tile)
    assert px.valid.all()
    rgb = src.to_rgb8(px)
    assert 60 < rgb.mean() < 200  # averages of uniform noise sit mid-range


def test_auto_stretch_of_float_reflectance_spans_the_8_bit_range(tmp_path: Path) -> None:
    src = GeoTiffSource("refl", write_float(tmp_path / "f.tif"), [1, 2, 3], "auto")
    lo, hi = src.stretch
    assert (lo > 0).all() and (hi < 0.5).all() and (hi - lo > 0.4).all()
    tile = Tile(
        "k", "refl", "EPSG:32610", 10.0, 16, int(ORIGIN[0] // 160) + 1, int(ORIGIN[1] // 160) - 1
    )
    rgb = src.to_rgb8(src.read_tile(tile))
    assert 110 < rgb.mean() < 145 and rgb.max() == 255  # uniform values: mid-grey on average


def test_bad_rasters_fail_with_the_file_named(tmp_path: Path) -> None:
    with pytest.raises(FatalError, match="no CRS"):
        GeoTiffSource("x", write_no_crs(tmp_path / "n.tif"), [1])
    with pytest.raises(FatalError, match=r"corrupt\.tif: the pixel data cannot be read"):
        GeoTiffSource("x", write_corrupt(tmp_path / "corrupt.tif"), [1, 2, 3])
    with pytest.raises(FatalError, match="has 3 bands"):
        GeoTiffSource("x", write_rgb(tmp_path / "a.tif"), [1, 2, 4])


def test_area_from_geojson_keeps_only_cells_touching_it() -> None:
    from tests.conftest import HELSINKI

    scene = HELSINKI / "S2B_RGBNIR_20210926_Seurasaari.tif"
    island = HELSINKI / "seurasaari_island_osm_way36911729.geojson"
    src = GeoTiffSource("s2", scene, [3, 2, 1], "auto", nodata=0)
    base = {"name": "h", "imagery": [{"name": "s2", "path": str(scene)}], "tiles": {"size_px": 8}}
    whole = plan_tiles(Recipe.model_validate(base), [src])
    shaped = plan_tiles(Recipe.model_validate({**base, "area": {"geojson": str(island)}}), [src])
    assert 0 < len(shaped.load_tiles()) < len(whole.load_tiles())
    assert {t.key for t in shaped.load_tiles()} <= {t.key for t in whole.load_tiles()}
    outline = gpd.read_file(island).to_crs(shaped.load_tiles()[0].crs).geometry.iloc[0]
    assert all(outline.intersects(shapely.box(*t.bounds)) for t in shaped.load_tiles())
    assert shaped.load_tiles()[0].crs == "EPSG:32635"


def test_ground_resolution_in_any_crs(tmp_path: Path) -> None:
    from rasterio.transform import from_origin

    path = tmp_path / "geo.tif"
    profile = {"driver": "GTiff", "width": 8, "height": 8, "count": 1, "dtype": "uint8"}
    with rasterio.open(
        path, "w", **profile, crs="EPSG:4326", transform=from_origin(24.9, 60.2, 1e-4, 1e-4)
    ) as ds:
        ds.write(np.full((1, 8, 8), 9, dtype=np.uint8))
    src = GeoTiffSource("g", path, [1])
    assert src.res == pytest.approx(1e-4)
    assert src.res_m == pytest.approx(111_320 * 1e-4 * np.cos(np.radians(60.2)), rel=0.01)
    mercator = GeoTiffSource("m", SF_LANDSAT, [1, 2, 3], "none")
    assert mercator.res == 30 and mercator.res_m == pytest.approx(
        30 * np.cos(np.radians(37.79)), rel=0.01
    )


@pytest.mark.parametrize("crs", ["EPSG:32610", "EPSG:32633", "EPSG:3857", "EPSG:3035"])
def test_tile_lonlat_bounds_match_a_dense_reprojection(crs: str) -> None:
    """A tile's lon/lat bounds use 2 points per edge; they must equal a 21-point densification
    (the edges of a tile of a few km are straight to well under a millimetre)."""
    tr = transformer(crs, "EPSG:4326")
    for size_px, gsd in ((128, 10.0), (256, 10.0), (1024, 19.0)):
        for col, row in ((0, 0), (37, 1900), (-51, 2600), (12, -3100)):
            t = Tile("k", "img", crs, gsd, size_px, col, row)
            dense = tr.transform_bounds(*t.bounds, densify_pts=21)
            assert t.bbox_lonlat() == pytest.approx(dense, abs=1e-9)


FIJI = 32760  # WGS 84 / UTM 60S: its east edge runs past 180 degrees


def _across_antimeridian(path: Path) -> Path:
    """A 20 km RGB raster in UTM 60S centred on 180 degrees at 17 degrees south (Fiji)."""
    x0, y0 = transformer("EPSG:4326", f"EPSG:{FIJI}").transform(180.0, -17.0)
    x0, y0 = round(x0 / 10) * 10 - 10_000, round(y0 / 10) * 10 + 10_000
    data = np.random.default_rng(0).integers(0, 255, (3, 2000, 2000), dtype=np.uint8)
    profile = {"driver": "GTiff", "width": 2000, "height": 2000, "count": 3, "dtype": "uint8"}
    profile |= {"crs": f"EPSG:{FIJI}", "transform": rasterio.transform.from_origin(x0, y0, 10, 10)}
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
    return path


def test_an_area_drawn_across_the_antimeridian_is_split_and_plans_fast(tmp_path: Path) -> None:
    import json
    import time

    image = _across_antimeridian(tmp_path / "fiji.tif")
    src = GeoTiffSource("img", image, [1, 2, 3], "none")
    assert src.footprint().bounds[2] - src.footprint().bounds[0] > 359  # both sides of 180
    ring = [[179.95, -17.05], [-179.95, -17.05], [-179.95, -16.95], [179.95, -16.95]]
    area = tmp_path / "area.geojson"
    area.write_text(json.dumps({"type": "Polygon", "coordinates": [[*ring, ring[0]]]}))
    recipe = Recipe.model_validate(
        {
            "name": "fiji",
            "area": {"geojson": str(area)},
            "imagery": [{"name": "img", "path": str(image), "scale": "none"}],
            "tiles": {"size_px": 64, "gsd_m": [10]},
        }
    )
    t = time.perf_counter()
    plan = plan_tiles(recipe, [src])
    assert time.perf_counter() - t < 10
    assert plan.load_tiles()[0].crs in (f"EPSG:{FIJI}", "EPSG:32701")  # a zone beside 180 degrees
    # 0.1 x 0.1 degrees is about 10.6 x 11.1 km: some 290 cells of 640 m, not a strip
    # around the world.
    assert 250 <= len(plan.load_tiles()) <= 340 and all(
        t.plan_reject is None for t in plan.load_tiles()
    )
    for t in plan.load_tiles():
        w, s, e, _ = t.bbox_lonlat()
        assert abs(s + 17) < 0.06 and (w > 179.9 or e < -179.9)
    bbox = recipe.model_copy(
        update={
            "area": Recipe.model_fields["area"].annotation(bbox=(179.95, -17.05, -179.95, -16.95))
        }  # type: ignore[misc]
    )
    assert {t.key for t in plan_tiles(bbox, [src]).load_tiles()} == {
        t.key for t in plan.load_tiles()
    }
