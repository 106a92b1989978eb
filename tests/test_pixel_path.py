"""The batched pixel path: block reads against per-tile reads, on real rasterio and fixtures."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.errors import RasterioError

from geoweave.errors import FatalError
from geoweave.protocols import TileImage
from geoweave.registry import IMAGERY_SOURCES
from geoweave.sources import warp
from geoweave.sources.grid import cells_over, tile_key
from geoweave.sources.imagery import GeoTiffSource
from geoweave.sources.landcover import LandCoverSource
from geoweave.sources.rasters import check_readable, percentile_stretch
from geoweave.tile import Tile
from tests.data.raster_fixture import (
    write_cog_with_bad_block,
    write_corrupt,
    write_partial_nodata,
    write_rgb,
    write_rotated,
    write_textured,
    write_uint16,
)

SF_LANDSAT = Path(__file__).resolve().parents[1].parent / "shared/data/sf-bay"
SF_LANDSAT = SF_LANDSAT / "sf_bay_landsat7_falsecolor_30m.tif"
HERE = Path(__file__).resolve().parent


def tiles_over(src: GeoTiffSource, gsd: float, size: int, crs: str = "EPSG:32610") -> list[Tile]:
    cells = cells_over(src.footprint(), crs, gsd * size)
    return [
        Tile(tile_key(src.name, gsd, crs, c, r), src.name, crs, gsd, size, c, r) for c, r in cells
    ]


def compare(src: GeoTiffSource, tiles: list[Tile]) -> dict[str, float]:
    """Batched read against read_tile + to_rgb8: agreement statistics over all tiles."""
    got = src.read(tiles)
    diffs, agree = [], []
    for image, tile in zip(got, tiles, strict=True):
        assert isinstance(image, TileImage)
        ref = src.read_tile(tile)
        both = image.valid & ref.valid
        diffs.append(np.abs(image.data.astype(int) - ref.data.astype(int))[:, both].ravel())
        agree.append((image.valid == ref.valid).ravel())
        assert image.rgb.shape == (tile.size_px, tile.size_px, 3) and image.rgb.dtype == np.uint8
        np.testing.assert_array_equal(image.rgb, src.to_rgb8(image))
        assert image.item_id == src.path.name
    d = np.concatenate(diffs)
    return {
        "within1": float((d <= 1).mean()),
        "mean": float(d.mean()),
        "valid": float(np.concatenate(agree).mean()),
    }


@pytest.mark.parametrize(("gsd", "size", "within1"), [(30, 64, 0.90), (60, 32, 0.95)])
def test_sf_bay_batched_matches_per_tile(gsd: float, size: int, within1: float) -> None:
    src = GeoTiffSource("sf", SF_LANDSAT, [1, 2, 3], "auto", acquired="2001-05-01")
    tiles = tiles_over(src, gsd, size)
    stats = compare(src, tiles)
    assert stats["valid"] >= 0.995 and stats["within1"] >= within1 and stats["mean"] <= 0.5
    assert src.aligned_blocks == 0  # EPSG:3857 under a UTM grid: always a warp
    assert {img.acquired for img in src.read(tiles[:3])} == {"2001-05-01"}


@pytest.mark.parametrize(("gsd", "size"), [(10, 32), (20, 16), (30, 16)])
def test_rotated_other_zone_batched_matches_per_tile(tmp_path: Path, gsd: float, size: int) -> None:
    src = GeoTiffSource("rot", write_rotated(tmp_path / "rot.tif"), [1, 2, 3], "none")
    stats = compare(src, tiles_over(src, gsd, size))
    assert stats["valid"] >= 0.995
    if gsd == 10:  # bilinear at the same GSD: GDAL fits its kernel scale per chunk
        assert stats["mean"] <= 1.5 and stats["within1"] >= 0.6
    else:
        assert stats["within1"] >= 0.99


def _assert_identical(src: GeoTiffSource, tiles: list[Tile]) -> None:
    for image, tile in zip(src.read(tiles), tiles, strict=True):
        assert isinstance(image, TileImage)
        ref = src.read_tile(tile)
        np.testing.assert_array_equal(image.data, ref.data)
        np.testing.assert_array_equal(image.valid, ref.valid)
        np.testing.assert_array_equal(image.rgb, src.to_rgb8(ref))


def test_aligned_grid_is_identical_and_skips_the_warp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = GeoTiffSource(
        "a", write_rgb(tmp_path / "a.tif", size=256, nodata_cols=40), [3, 2, 1], "none"
    )
    tiles = tiles_over(src, 10, 16)  # edge tiles reach past the raster
    _assert_identical(src, tiles)
    assert src.aligned_blocks == 1
    monkeypatch.setattr(warp, "MAX_BLOCK_PX", 64)  # 4 x 4 tiles a block, and a ragged subset
    _assert_identical(src, tiles[::3])
    assert src.aligned_blocks > 5
    for declared, override in [(255, None), (None, 255.0)]:  # a pixel valid in some bands
        path = write_partial_nodata(tmp_path / f"n{declared}.tif", nodata=declared)
        _assert_identical(GeoTiffSource("n", path, [1, 2, 3], "none", nodata=override), tiles)
    u16 = GeoTiffSource("u", write_uint16(tmp_path / "u.tif", size=64), [3, 2, 1], "auto")
    _assert_identical(u16, tiles_over(u16, 10, 8))  # the float stretch path
    assert u16.aligned_blocks > 0


def test_damaged_block_rejects_only_the_tiles_over_it(tmp_path: Path) -> None:
    path = write_cog_with_bad_block(tmp_path / "bad.tif")
    src = GeoTiffSource("bad", path, [1, 2, 3], "auto")  # the up-front check passes
    for gsd, size in [(10, 64), (20, 32)]:  # aligned read, then an averaging warp
        tiles = tiles_over(src, gsd, size)
        got = src.read(tiles)
        bad = []
        for tile, image in zip(tiles, got, strict=True):
            try:
                ref = src.read_tile(tile)
            except RasterioError:
                bad.append(tile)
                assert isinstance(image, RasterioError)
                continue
            assert isinstance(image, TileImage)
            np.testing.assert_array_equal(image.data, ref.data)
        assert 0 < len(bad) < len(tiles) // 4
    bare = write_cog_with_bad_block(tmp_path / "bare.tif", overviews=False)
    with rasterio.open(bare) as ds:
        check_readable(ds, bare, "imagery")
        lo, hi = percentile_stretch(ds, [1, 2, 3], None)  # the damaged block is skipped
    assert (lo > 30).all() and (hi < 220).all()


def test_truncated_file_still_fails_up_front(tmp_path: Path) -> None:
    with pytest.raises(FatalError, match=r"cut\.tif: the pixel data cannot be read"):
        GeoTiffSource("x", write_corrupt(tmp_path / "cut.tif"), [1, 2, 3])


def _old_stretch(path: Path, bands: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The full decimated read the stretch used before sampling (the reference)."""
    with rasterio.open(path) as ds:
        step = max(1, max(ds.width, ds.height) // 1024)
        shape = (len(bands), max(1, ds.height // step), max(1, ds.width // step))
        arr = ds.read(bands, out_shape=shape, masked=True)
    pct = [np.percentile(arr[i].compressed(), [2, 98]) for i in range(len(bands))]
    return np.array([p[0] for p in pct]), np.array([p[1] for p in pct])


@pytest.mark.parametrize("overviews", [(2, 4, 8), ()])
def test_stretch_from_overview_or_block_sample(tmp_path: Path, overviews: tuple[int, ...]) -> None:
    path = write_textured(
        tmp_path / "u16.tif", size=2048, dtype="uint16", block=128, overviews=overviews
    )
    src = GeoTiffSource("u", path, [1, 2, 3], "auto")
    lo, hi = src.stretch
    ref_lo, ref_hi = _old_stretch(path, [1, 2, 3])
    # An overview holds every part of the image; 64 of 256 blocks miss some of its structure.
    tol = (0.02 if overviews else 0.05) * (ref_hi - ref_lo).min()
    assert np.abs(lo - ref_lo).max() <= tol
    assert np.abs(hi - ref_hi).max() <= tol


def _landcover_fixture():
    spec = importlib.util.spec_from_file_location("lc_fixture", HERE / "data/landcover_fixture.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_landcover_fractions_batched_match_coverage(tmp_path: Path) -> None:
    lc = _landcover_fixture()
    lc.write_landcover(tmp_path / "lc.tif", seed=0)
    source = LandCoverSource(tmp_path / "lc.tif", "esa_worldcover")
    for gsd, size, crs, exact in [
        (20, 8, "EPSG:32610", True),  # aligned
        (40, 8, "EPSG:32610", False),  # mode
        (15, 16, "EPSG:32611", False),  # nearest, another zone
    ]:
        west, south, east, north = source.bounds_lonlat
        import shapely

        cells = cells_over(shapely.box(west, south, east, north), crs, gsd * size)
        tiles = [Tile(f"{c}_{r}", "lc", crs, gsd, size, c, r) for c, r in cells]
        got = source.fractions(tiles)
        for tile, result in zip(tiles, got, strict=True):
            assert not isinstance(result, Exception)
            ref = source.coverage(tile.crs, tile.transform, size, size)
            if exact:
                assert result == ref
            else:
                assert result[1] == pytest.approx(ref[1], abs=0.03)
                for name in set(result[0]) | set(ref[0]):
                    assert result[0].get(name, 0.0) == pytest.approx(
                        ref[0].get(name, 0.0), abs=0.05
                    )


def test_registered_with_options(tmp_path: Path) -> None:
    path = write_rgb(tmp_path / "a.tif")
    src = IMAGERY_SOURCES.build("geotiff", {"path": str(path), "scale": "none"}, "img", "CC-BY-4.0")
    assert isinstance(src, GeoTiffSource) and src.license == "CC-BY-4.0" and src.bands == [1, 2, 3]
    tiles = tiles_over(src, 10, 16)
    far = Tile("far", "img", "EPSG:32610", 10, 16, 0, 0)
    assert src.plan([*tiles, far]) == ["a.tif"] * len(tiles) + [None]
    with pytest.raises(FatalError, match="bands"):
        IMAGERY_SOURCES.options("geotiff", {"path": str(path), "bands": [1, 2]}, "imagery[0]")


def test_jpeg_encoder_matches_pillow_quality() -> None:
    import io

    from PIL import Image

    from geoweave.builders.encode import encode_jpeg
    from tests.data.raster_fixture import textured

    rgb = textured(np.random.default_rng(0), (3, 128, 128), 1, 250).astype(np.uint8)
    rgb = np.ascontiguousarray(rgb.transpose(1, 2, 0))
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=90)
    data = encode_jpeg(rgb, 90)

    def psnr(blob: bytes) -> float:
        decoded = np.asarray(Image.open(io.BytesIO(blob)), dtype=float)
        return float(10 * np.log10(255**2 / np.mean((decoded - rgb) ** 2)))

    # Two libjpeg builds round differently; the same quality and chroma give the same fidelity.
    assert Image.open(io.BytesIO(data)).size == (128, 128)
    assert abs(len(data) - len(buf.getvalue())) <= 0.02 * len(buf.getvalue())
    assert abs(psnr(data) - psnr(buf.getvalue())) <= 0.2


def test_acquisition_time_comes_from_the_file_unless_the_recipe_gives_one(tmp_path: Path) -> None:
    from geoweave.sources.imagery import GeoTiffSource, tiff_datetime

    path = write_rgb(tmp_path / "dated.tif")
    with rasterio.open(path, "r+") as ds:
        ds.update_tags(TIFFTAG_DATETIME="2021:09:26 09:40:29")
    assert GeoTiffSource("img", path).acquired == "2021-09-26T09:40:29"
    assert GeoTiffSource("img", path, acquired="2021-09-26").acquired == "2021-09-26"
    assert GeoTiffSource("img", write_rgb(tmp_path / "undated.tif")).acquired is None
    assert tiff_datetime("sometime in autumn") is None


_CACHE_PROBE = """
import ctypes, glob, os, sys
from pathlib import Path
import rasterio
from geoweave.builders.recipe import Recipe
from geoweave.builders.worker_state import open_sources
from tests.data.raster_fixture import write_rgb

lib = glob.glob(os.path.join(os.path.dirname(rasterio.__file__), "..", "rasterio.libs", "libgdal*"))
gdal = ctypes.CDLL(lib[0]) if lib else ctypes.CDLL(None)
gdal.GDALGetCacheMax64.restype = ctypes.c_int64
path = write_rgb(Path(sys.argv[1]) / "img.tif")
recipe = Recipe.model_validate({"name": "t", "imagery": [{"name": "img", "path": str(path)}]})
open_sources(recipe, ())  # opening the source reads a block: its check and its stretch
with rasterio.open(path) as ds:
    ds.read(1)
print(gdal.GDALGetCacheMax64() // 2**20)
"""


@pytest.mark.parametrize(("env", "mb"), [(None, 64), ("128", 128)])
def test_a_worker_reads_with_a_64_mb_gdal_block_cache_unless_one_is_set(
    tmp_path: Path, env: str | None, mb: int
) -> None:
    """GDAL takes ``GDAL_CACHEMAX`` at a process's first block read; a worker's sources open
    first and set it to 64 MB (a build reads each block about once), a user's own stands."""
    import os
    import subprocess
    import sys

    environ = {k: v for k, v in os.environ.items() if k != "GDAL_CACHEMAX"}
    if env is not None:
        environ["GDAL_CACHEMAX"] = env
    root = str(HERE.parent)
    out = subprocess.run(
        [sys.executable, "-c", _CACHE_PROBE, str(tmp_path)],
        capture_output=True, text=True, env=environ, cwd=root, check=True, timeout=120,
    )  # fmt: skip
    assert int(out.stdout.split()[-1]) == mb
