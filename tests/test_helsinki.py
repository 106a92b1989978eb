"""End to end on the real Helsinki sample: Sentinel-2 true colour over Seurasaari island, CORINE
land cover in another CRS and resolution, and the island outline as a vector label.

One build per module (local Ray); the tests read its manifest, tars and sidecars and check them
against direct computations on the source files.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import geopandas as gpd
import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
import webdataset as wds
import yaml
from affine import Affine
from PIL import Image
from rasterio.enums import Resampling
from rasterio.io import MemoryFile
from rasterio.transform import array_bounds
from rasterio.warp import reproject
from rasterio.windows import from_bounds

from geoweave.sources.imagery import GeoTiffSource
from geoweave.sources.landcover import load_legend
from tests.conftest import HELSINKI, run_cli

SCENE = HELSINKI / "S2B_RGBNIR_20210926_Seurasaari.tif"
CORINE = HELSINKI / "Clc2018_Seurasaari.tif"
ISLAND = HELSINKI / "seurasaari_island_osm_way36911729.geojson"
NAME = "seurasaari"
VECTOR_NAME = "island"
BANDS = [3, 2, 1]  # R = B4, G = B3, B = B2 (the file holds B2, B3, B4, B8)
GSDS = (10.0, 20.0)
SIZE = 16
FOREST = "forest"  # every CORINE forest class name has it ("Mixed forest on mineral soil", ...)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not all(p.exists() for p in (SCENE, CORINE, ISLAND)),
        reason="shared Helsinki sample not present",
    ),
]


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the Seurasaari dataset once; returns the output folder."""
    base = tmp_path_factory.mktemp("helsinki")
    recipe = {
        "name": NAME,
        "imagery": [
            {
                "name": "s2",
                "path": str(SCENE),
                "bands": BANDS,
                "scale": "auto",
                "keep_bands": True,
                "nodata": 0,  # the scene is 0 around the island and declares no nodata
                "acquired": "2021-09-26",
                "license": "contains modified Copernicus Sentinel data 2021",
            }
        ],
        "tiles": {"size_px": SIZE, "gsd_m": list(GSDS)},
        "labels": {
            "landcover": {"path": str(CORINE), "legend": "corine_fi", "name": "corine"},
            "vector": [
                {
                    "path": str(ISLAND),
                    "name": VECTOR_NAME,
                    "license": "© OpenStreetMap contributors, ODbL 1.0",
                }
            ],
        },
        # The island polygon is the one label; the scene is 0 around the island, so coastal
        # tiles are mostly fill: allow them (a tile with no pixel at all is still rejected).
        "filters": {"min_labels_v1": {"min_labels": 1}, "nodata_v1": {"max_fraction": 0.95}},
        "output": {"samples_per_shard": 16},
        "execution": {"num_cpus": 4},
    }
    path = base / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    out = base / "out"
    result = run_cli("run", str(path), "--output", str(out), "--no-progress")
    assert result.returncode == 0, result.stderr[-4000:]
    return out


@pytest.fixture(scope="module")
def kept(build: Path) -> list[dict[str, Any]]:
    """The kept sample records from the manifest."""
    con = duckdb.connect(str(build / "manifest.duckdb"), read_only=True)
    try:
        rel = con.execute("SELECT * FROM samples WHERE status = 'kept' ORDER BY key")
        cols = [d[0] for d in rel.description or []]
        return [dict(zip(cols, row, strict=True)) for row in rel.fetchall()]
    finally:
        con.close()


def tar_samples(out: Path) -> Iterator[dict[str, Any]]:
    tars = sorted(str(p) for p in out.glob(f"{NAME}-*.tar"))
    assert tars
    yield from wds.WebDataset(tars, shardshuffle=False)


@pytest.fixture(scope="module")
def decoded(build: Path) -> dict[str, dict[str, Any]]:
    """key -> the tar's JPEG (H, W, 3), all-band GeoTIFF, its CRS and transform, JSON, text."""
    found: dict[str, dict[str, Any]] = {}
    for s in tar_samples(build):
        with MemoryFile(s["tif"]) as mem, mem.open() as ds:
            bands, crs, transform, dtypes = ds.read(), ds.crs, ds.transform, ds.dtypes
        found[s["__key__"]] = {
            "jpg": np.asarray(Image.open(io.BytesIO(s["jpg"]))),
            "bands": bands,
            "crs": crs,
            "transform": transform,
            "dtypes": dtypes,
            "json": json.loads(s["json"]),
            "txt": s["txt"].decode() if isinstance(s["txt"], bytes) else s["txt"],
        }
    return found


def tile_grid(sample: dict[str, Any]) -> tuple[str, Affine, int]:
    return sample["crs"], Affine(*sample["transform"][:6]), int(sample["size_px"])


def expected_landcover(sample: dict[str, Any]) -> dict[str, float]:
    """CORINE resampled onto the tile grid here (nearest when the tile is as fine as the
    raster or finer, mode when coarser), counted and named through the corine_fi legend."""
    crs, transform, size = tile_grid(sample)
    legend = load_legend("corine_fi")
    with rasterio.open(CORINE) as ds:
        classes, nodata = ds.read(1), ds.nodata
        src_crs, src_transform, src_res = ds.crs, ds.transform, abs(ds.transform.a)
    assert nodata == 255
    grid = np.full((size, size), 255, dtype=np.uint8)
    coarser = float(sample["gsd_m"]) > src_res
    reproject(
        classes,
        grid,
        src_transform=src_transform,
        src_crs=src_crs,
        src_nodata=255,
        dst_transform=transform,
        dst_crs=crs,
        dst_nodata=255,
        resampling=Resampling.mode if coarser else Resampling.nearest,
    )
    valid = grid[grid != 255]
    shares: dict[str, float] = {}
    for code, count in zip(*np.unique(valid, return_counts=True), strict=True):
        name = legend.get(int(code), f"class {int(code)}")
        shares[name] = shares.get(name, 0.0) + int(count) / valid.size
    return shares


def island_pixels(bands: np.ndarray) -> np.ndarray:
    """Island pixels of a tile: the scene is 0 in every band around the island."""
    return np.asarray((bands > 0).all(axis=0))


def forest_share(landcover: dict[str, float]) -> float:
    return sum(v for k, v in landcover.items() if FOREST in k.lower())


# --- the build ---------------------------------------------------------------------------------


def test_build_keeps_tiles_at_both_gsds(build: Path, kept: list[dict[str, Any]]) -> None:
    con = duckdb.connect(str(build / "manifest.duckdb"), read_only=True)
    try:
        planned = con.execute("SELECT count(*) FROM samples").fetchone()
        shards = con.execute("SELECT status, count(*) FROM shards GROUP BY 1").fetchall()
    finally:
        con.close()
    assert planned is not None and planned[0] == pq.read_metadata(build / "plan.parquet").num_rows
    assert [s for s, _ in shards] == ["complete"]
    by_gsd = {g: sum(1 for s in kept if s["gsd_m"] == g) for g in GSDS}
    assert all(n > 0 for n in by_gsd.values()), by_gsd
    assert {s["crs"] for s in kept} == {"EPSG:32635"}  # the UTM zone of the island
    assert all(s["size_px"] == SIZE for s in kept)
    assert all(s["acquired"] == "2021-09-26" for s in kept)


# --- land cover --------------------------------------------------------------------------------


def test_landcover_fractions_sum_to_one(kept: list[dict[str, Any]]) -> None:
    with_landcover = [s for s in kept if s["landcover"]]
    assert len(with_landcover) >= len(kept) // 2  # CORINE covers most of the island
    for s in with_landcover:
        assert sum(s["landcover"].values()) == pytest.approx(1.0, abs=1e-6), s["key"]
        assert all(0 < v <= 1 for v in s["landcover"].values()), s["key"]


def test_landcover_equals_direct_reprojection(kept: list[dict[str, Any]]) -> None:
    for s in kept:
        expected = expected_landcover(s)
        got = dict(s["landcover"])
        assert got.keys() == expected.keys(), s["key"]
        for name, share in expected.items():
            assert got[name] == pytest.approx(share, abs=1e-9), (s["key"], name)


def test_landcover_is_forest_dominated_overall(kept: list[dict[str, Any]]) -> None:
    """Seurasaari is a wooded island: forest classes hold most of its CORINE pixels."""
    shares = [forest_share(s["landcover"]) for s in kept if s["landcover"]]
    assert np.mean(shares) > 0.5


# --- pixels ------------------------------------------------------------------------------------


def test_tar_has_a_jpeg_and_all_bands_for_every_kept_sample(
    kept: list[dict[str, Any]], decoded: dict[str, dict[str, Any]]
) -> None:
    assert sorted(decoded) == [s["key"] for s in kept]
    for s in kept:
        d = decoded[s["key"]]
        crs, transform, size = tile_grid(s)
        assert d["jpg"].shape == (size, size, 3) and d["jpg"].dtype == np.uint8
        assert d["bands"].shape == (4, size, size)
        assert d["dtypes"] == ("uint16",) * 4
        assert d["crs"].to_string() == crs
        assert d["transform"].almost_equals(transform)
        assert d["json"]["key"] == s["key"]


def test_kept_bands_at_native_gsd_are_the_scene_pixels(
    kept: list[dict[str, Any]], decoded: dict[str, dict[str, Any]]
) -> None:
    """At 10 m the tile grid lines up with the scene's: the GeoTIFF holds its exact pixels
    (0 where the tile runs past the scene)."""
    native = [s for s in kept if s["gsd_m"] == 10.0]
    assert native
    with rasterio.open(SCENE) as ds:
        for s in native:
            _, transform, size = tile_grid(s)
            window = from_bounds(*array_bounds(size, size, transform), transform=ds.transform)
            expected = ds.read(window=window, boundless=True, fill_value=0)
            np.testing.assert_array_equal(decoded[s["key"]]["bands"], expected, s["key"])


def test_kept_bands_at_20m_average_the_scene(
    kept: list[dict[str, Any]], decoded: dict[str, dict[str, Any]]
) -> None:
    """At 20 m each pixel is the average of a 2 x 2 block of scene pixels (checked where the
    whole block is island, so nodata handling does not matter)."""
    coarse = [s for s in kept if s["gsd_m"] == 20.0]
    assert coarse
    checked = 0
    with rasterio.open(SCENE) as ds:
        for s in coarse:
            _, transform, size = tile_grid(s)
            fine = Affine(transform.a / 2, 0, transform.c, 0, transform.e / 2, transform.f)
            window = from_bounds(*array_bounds(2 * size, 2 * size, fine), transform=ds.transform)
            src = ds.read(window=window, boundless=True, fill_value=0).astype(np.float64)
            blocks = src.reshape(4, size, 2, size, 2)
            inside = (blocks > 0).all(axis=(0, 2, 4))
            mean = blocks.mean(axis=(2, 4))
            got = decoded[s["key"]]["bands"].astype(np.float64)
            assert np.abs(got - mean)[:, inside].max(initial=0) <= 1.0, s["key"]
            checked += int(inside.sum())
    assert checked > 100


def test_jpeg_is_a_sane_true_colour_image(
    kept: list[dict[str, Any]], decoded: dict[str, dict[str, Any]]
) -> None:
    pooled = []
    for s in kept:
        d = decoded[s["key"]]
        rgb = d["jpg"].astype(np.float64)
        island = island_pixels(d["bands"])
        assert rgb.std() > 2, s["key"]  # not constant
        assert not (rgb == 0).all() and not (rgb == 255).all(), s["key"]
        if island.mean() >= 0.25:
            means = rgb[island].mean(axis=0)
            assert ((means > 15) & (means < 240)).all(), (s["key"], means)
            pooled.append(rgb[island])
    assert len(pooled) >= 5
    means = np.concatenate(pooled).mean(axis=0)
    assert ((means > 40) & (means < 200)).all(), means


def test_vegetation_tiles_are_green(
    kept: list[dict[str, Any]], decoded: dict[str, dict[str, Any]]
) -> None:
    """Over forest Sentinel-2 true colour has G above R and roughly at or above B."""
    checked = 0
    for s in kept:
        d = decoded[s["key"]]
        island = island_pixels(d["bands"])
        if forest_share(s["landcover"]) < 0.6 or island.mean() < 0.5:
            continue
        r, g, b = d["jpg"][island].astype(np.float64).mean(axis=0)
        assert g > r, (s["key"], r, g, b)
        assert g >= 0.97 * b, (s["key"], r, g, b)
        checked += 1
    assert checked >= 3


def test_jpeg_channels_are_the_recipe_bands_stretched(
    kept: list[dict[str, Any]], decoded: dict[str, dict[str, Any]]
) -> None:
    """Each JPEG channel is the recipe's band under the source's fixed 8-bit stretch: tile
    means match (JPEG chroma subsampling blurs single pixels of a 16 px tile, not means), and
    match far better than with the bands in file order."""
    source = GeoTiffSource("s2", SCENE, BANDS, "auto", nodata=0)
    lo, hi = source.stretch
    with rasterio.open(SCENE) as ds:
        band_max = [int(ds.read(b).max()) for b in BANDS]
    assert ((lo >= 0) & (lo < hi) & (hi <= band_max)).all(), (lo, hi)

    def stretched(bands: np.ndarray, order: list[int]) -> np.ndarray:
        arr = bands[[b - 1 for b in order]].astype(np.float32)
        arr = (arr - lo[:, None, None]) / (hi - lo)[:, None, None] * 255.0
        return np.clip(arr, 0, 255).astype(np.uint8).mean(axis=(1, 2))

    right, wrong = [], []
    for s in kept:
        d = decoded[s["key"]]
        means = d["jpg"].astype(np.float64).mean(axis=(0, 1))
        right.append(np.abs(means - stretched(d["bands"], BANDS)))
        wrong.append(np.abs(means - stretched(d["bands"], [1, 2, 3])))
        assert (right[-1] < 4).all(), (s["key"], right[-1])
    assert np.mean(right) * 3 < np.mean(wrong)


# --- labels and text ---------------------------------------------------------------------------


def test_island_outline_is_a_label_of_every_kept_sample(
    kept: list[dict[str, Any]], decoded: dict[str, dict[str, Any]]
) -> None:
    frame = gpd.read_file(ISLAND)
    props = frame.drop(columns=frame.geometry.name).iloc[0].to_dict()
    island_id = f"{VECTOR_NAME}:{props.pop('osm_id')}"  # the id column becomes the id
    tags = {k: str(v) for k, v in props.items()}
    for s in kept:
        islands = [e for e in s["osm"] if e["source"] == VECTOR_NAME]
        assert len(islands) == 1, s["key"]
        el = islands[0]
        assert el["id"] == island_id
        assert dict(el["tags"]) == tags
        assert el["geom_type"] == "polygon"
        assert el["clipped"]  # the island is larger than any tile
        assert el["coverage_px"] >= 4  # labels.min_pixels
        # Vector labels are not OSM-index elements: no osm_ids.
        assert s["osm_ids"] == []
        assert s["scores"]["n_labels"] == 1.0
        # The vector source's licence travels with every sample that uses its labels.
        assert s["license"] == (
            "contains modified Copernicus Sentinel data 2021; © OpenStreetMap contributors, ODbL 1.0"
        )


def test_island_label_matches_the_island_pixels(
    kept: list[dict[str, Any]], decoded: dict[str, dict[str, Any]]
) -> None:
    """The scene was masked to this outline, so at 10 m the outline's share of the tile and the
    share of non-zero pixels agree up to the pixels along the shore: labels and pixels are
    joined at the same place."""
    for s in kept:
        if s["gsd_m"] != 10.0:
            continue
        el = next(e for e in s["osm"] if e["source"] == VECTOR_NAME)
        island = island_pixels(decoded[s["key"]]["bands"]).mean()
        assert el["coverage_frac"] == pytest.approx(island, abs=0.03), s["key"]


def test_captions_mention_the_dominant_land_cover(
    kept: list[dict[str, Any]], decoded: dict[str, dict[str, Any]]
) -> None:
    checked = 0
    for s in kept:
        captions = [c["text"] for c in s["captions"]]
        assert captions, s["key"]  # a sample with nothing to say is rejected (no_caption)
        assert decoded[s["key"]]["txt"] == captions[0]
        assert s["caption"] == captions[0]
        landcover = expected_landcover(s)
        if not landcover:
            assert all("mostly" not in c and "partly" not in c for c in captions), s["key"]
            continue
        top = max(landcover.values())
        word = "mostly" if top >= 0.5 else "partly"
        clauses = {
            f"{word} {name.lower()} ({share:.0%})"
            for name, share in landcover.items()
            if share == top
        }
        for text in captions:
            assert any(c in text for c in clauses), (s["key"], text, clauses)
        checked += 1
    assert checked >= 5
