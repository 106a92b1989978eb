"""Land-cover fractions on a seeded fixture and on the real Helsinki CORINE sample."""

from __future__ import annotations

import importlib.util
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.transform import from_bounds
from rasterio.warp import reproject, transform_bounds
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from geoweave.errors import FatalError
from geoweave.sources.landcover import LandCoverSource, load_legend, shipped_legends

HERE = Path(__file__).resolve().parent
HELSINKI = Path(__file__).resolve().parents[1].parent / "shared/data/helsinki"
CORINE = HELSINKI / "Clc2018_Seurasaari.tif"
SENTINEL2 = HELSINKI / "S2B_RGBNIR_20210926_Seurasaari.tif"


def _fixture_module():
    spec = importlib.util.spec_from_file_location(
        "landcover_fixture", HERE / "data/landcover_fixture.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fixture = _fixture_module()


@pytest.fixture
def raster(tmp_path: Path) -> Path:
    path = tmp_path / "landcover.tif"
    fixture.write_landcover(path, seed=0)
    return path


def count_fractions(classes: np.ndarray, legend: dict[int, str], nodata: int) -> dict[str, float]:
    """Class fractions by a direct numpy count, the reference for the source's answers."""
    valid = classes[classes != nodata]
    counts = Counter(int(c) for c in valid)
    return {legend.get(c, f"class {c}"): n / valid.size for c, n in counts.items()}


def test_aligned_tile_equals_numpy_count(raster: Path) -> None:
    source = LandCoverSource(raster, "esa_worldcover")
    array = fixture.landcover_array(seed=0)
    west, north = fixture.ORIGIN
    row0, col0, height, width = 4, 4, 32, 40
    tile = Affine(
        fixture.PIXEL,
        0,
        west + col0 * fixture.PIXEL,
        0,
        -fixture.PIXEL,
        north - row0 * fixture.PIXEL,
    )
    expected = count_fractions(
        array[row0 : row0 + height, col0 : col0 + width], load_legend("esa_worldcover"), 0
    )
    shares, valid = source.coverage(fixture.CRS, tile, width, height)
    assert shares == expected
    assert source.coverage(fixture.CRS, tile, width, height)[0] == expected
    nodata_pixels = 4 * 4  # rows 4..7, cols 4..7 lie in the 8 x 8 nodata corner
    assert valid == pytest.approx(1 - nodata_pixels / (width * height))


def test_tile_in_another_crs_sums_to_one(raster: Path) -> None:
    source = LandCoverSource(raster, "esa_worldcover")
    west, north = fixture.ORIGIN
    east, south = west + 64 * fixture.PIXEL, north - 64 * fixture.PIXEL
    inner = (west + 200, south + 200, east - 200, north - 200)
    bounds = transform_bounds(fixture.CRS, "EPSG:3857", *inner)
    shares, valid = source.coverage("EPSG:3857", from_bounds(*bounds, 50, 50), 50, 50)
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-9)
    assert set(shares) <= set(load_legend("esa_worldcover").values())
    assert {"Tree cover", "Built-up", "Cropland", "Permanent water bodies"} <= set(shares)
    assert 0.9 < valid <= 1.0


def test_coarser_tile_uses_the_majority_class(raster: Path) -> None:
    source = LandCoverSource(raster, "esa_worldcover")
    west, north = fixture.ORIGIN
    tile = Affine(4 * fixture.PIXEL, 0, west, 0, -4 * fixture.PIXEL, north)  # 80 m pixels
    shares, valid = source.coverage(fixture.CRS, tile, 16, 16)
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-9)
    # Quadrants are 8 x 8 coarse pixels; the scattered grassland never wins a 4 x 4 block.
    assert shares["Built-up"] == shares["Permanent water bodies"] == 64 / (256 - 4)
    assert "Grassland" not in shares
    assert valid == (256 - 4) / 256  # the 8 x 8 nodata corner is 2 x 2 coarse pixels


def test_half_outside_tile_counts_only_valid_pixels(raster: Path) -> None:
    source = LandCoverSource(raster, "esa_worldcover")
    array = fixture.landcover_array(seed=0)
    west, north = fixture.ORIGIN
    row0, col0, size = 40, 48, 32  # the east half of the tile is beyond the raster
    tile = Affine(
        fixture.PIXEL,
        0,
        west + col0 * fixture.PIXEL,
        0,
        -fixture.PIXEL,
        north - row0 * fixture.PIXEL,
    )
    shares, valid = source.coverage(fixture.CRS, tile, size, size)
    expected = count_fractions(array[row0 : row0 + size, col0:], load_legend("esa_worldcover"), 0)
    assert shares == expected
    assert valid == pytest.approx((64 - row0) * (64 - col0) / size**2)


def test_tile_outside_the_raster_is_empty(raster: Path) -> None:
    source = LandCoverSource(raster, "esa_worldcover")
    west, north = fixture.ORIGIN
    tile = Affine(fixture.PIXEL, 0, west + 10_000, 0, -fixture.PIXEL, north)
    assert source.coverage(fixture.CRS, tile, 32, 32) == ({}, 0.0)
    assert source.coverage(fixture.CRS, tile, 32, 32)[0] == {}


def test_unknown_codes_and_bounds_and_pickle(raster: Path) -> None:
    source = LandCoverSource(raster, "corine", name="worldcover-as-corine")
    shares = source.coverage(fixture.CRS, source.transform, 64, 64)[0]
    assert set(shares) == {"class 10", "class 30", "class 40", "class 50", "class 80"}
    west, south, east, north = source.bounds_lonlat
    assert -123 < west < east < -122 and 37 < south < north < 38
    clone = pickle.loads(pickle.dumps(source))
    assert clone.coverage(fixture.CRS, source.transform, 64, 64)[0] == shares


@pytest.mark.skipif(not CORINE.exists(), reason="shared Helsinki sample not present")
def test_helsinki_corine_on_sentinel2_grid() -> None:
    source = LandCoverSource(CORINE, "corine_fi", name="clc2018_fi")
    with rasterio.open(SENTINEL2) as s2:
        crs, transform, width, height = s2.crs, s2.transform, s2.width, s2.height
    shares, valid = source.coverage(crs.to_string(), transform, width, height)

    with rasterio.open(CORINE) as clc:
        on_grid = np.full((height, width), 255, dtype=np.uint8)
        reproject(
            clc.read(1),
            on_grid,
            src_transform=clc.transform,
            src_crs=clc.crs,
            src_nodata=255,
            dst_transform=transform,
            dst_crs=crs,
            dst_nodata=255,
            resampling=Resampling.nearest,
        )
    names = load_legend("corine_fi")
    assert shares == pytest.approx(count_fractions(on_grid, names, 255), abs=1e-12)
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-9)
    assert valid == pytest.approx(np.count_nonzero(on_grid != 255) / on_grid.size)
    assert set(shares) <= set(names.values())
    assert max(shares, key=shares.__getitem__) == "Coniferous forest on mineral soil"
    # A sub-tile reads only a window of the raster and must agree with the whole-raster warp.
    row0, col0, size = 40, 20, 32
    sub = window_transform(Window(col0, row0, size, size), transform)
    expected = count_fractions(on_grid[row0 : row0 + size, col0 : col0 + size], names, 255)
    assert source.coverage(crs.to_string(), sub, size, size)[0] == pytest.approx(
        expected, abs=1e-12
    )


def test_raster_without_crs_is_fatal(tmp_path: Path) -> None:
    path = tmp_path / "no_crs.tif"
    profile = {"driver": "GTiff", "width": 4, "height": 4, "count": 1, "dtype": "uint8"}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.full((1, 4, 4), 10, dtype=np.uint8))
    with pytest.raises(FatalError, match=r"no_crs\.tif.*rio edit-info --crs"):
        LandCoverSource(path, "esa_worldcover")


def test_unreadable_raster_is_fatal(tmp_path: Path) -> None:
    path = tmp_path / "broken.tif"
    path.write_bytes(b"not a tiff")
    with pytest.raises(FatalError, match=r"broken\.tif"):
        LandCoverSource(path, "esa_worldcover")


def test_unknown_legend_lists_shipped_names(raster: Path) -> None:
    with pytest.raises(FatalError, match="corine, corine_fi, corine_grid, esa_worldcover") as info:
        LandCoverSource(raster, "dynamic_world_v9")
    assert all(name in str(info.value) for name in shipped_legends())


def test_shipped_legends() -> None:
    assert shipped_legends() == ["corine", "corine_fi", "corine_grid", "esa_worldcover"]
    assert load_legend("esa_worldcover")[50] == "Built-up"
    assert len(load_legend("esa_worldcover")) == 11
    corine, grid, finnish = (
        load_legend("corine"),
        load_legend("corine_grid"),
        load_legend("corine_fi"),
    )
    assert len(corine) == len(grid) == 44
    assert list(grid.values()) == list(corine.values())
    assert corine[243].startswith("Land principally occupied by agriculture, with")
    assert sorted(finnish) == list(range(1, 50))
    assert finnish[25] == "Coniferous forest on mineral soil"
    assert finnish[49] == "Sea and ocean"


def test_legend_from_csv_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.csv"
    path.write_text('# my classes\ncode,name\n# water first\n1,Water\n2,"Forest, dense"\n')
    assert load_legend(str(path)) == {1: "Water", 2: "Forest, dense"}
    path.write_text("value,label\n1,Water\n")
    with pytest.raises(FatalError, match="code,name"):
        load_legend(str(path))


def test_truncated_raster_is_fatal_before_work(tmp_path: Path) -> None:
    from tests.data.raster_fixture import write_corrupt

    bad = write_corrupt(tmp_path / "lc_cut.tif")
    with pytest.raises(FatalError, match=r"lc_cut\.tif: the pixel data cannot be read"):
        LandCoverSource(bad, "esa_worldcover")
