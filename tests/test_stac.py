"""The STAC imagery source against a stand-in: a static catalogue with COG assets made from
the SF Bay sample (tests/data/stac_fixture.py), served over HTTP on 127.0.0.1 with byte
ranges (tests/http_files.py), read by the real pystac and rasterio/GDAL (/vsicurl/)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from geoweave.builders.build import prepare
from geoweave.builders.recipe import Recipe
from geoweave.builders.shard import run_shard
from geoweave.errors import FatalError
from tests.conftest import SF_BAY
from tests.data.stac_fixture import COLLECTION, write_catalog
from tests.http_files import Files

# across the west half (to -122.306), the overlap (-122.364 to -122.306) and the east half
BBOX = (-122.42, 37.78, -122.27, 37.83)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_catalog(
        SF_BAY / "sf_bay_landsat7_falsecolor_30m.tif", tmp_path_factory.mktemp("stac")
    )


@pytest.fixture
def served(catalog: Path) -> Iterator[Files]:
    srv = Files(catalog.parent).start()
    try:
        yield srv
    finally:
        srv.shutdown()


def _recipe(out: Path, catalog: str, **stac: Any) -> Recipe:
    return Recipe.model_validate({
        "name": "stac",
        "area": {"bbox": BBOX},
        "imagery": [{"name": "l7", "type": "stac", "catalog": catalog, "scale": "none", **stac}],
        "tiles": {"size_px": 32, "gsd_m": [30]},
        "labels": {"osm": [str(SF_BAY / "sf_bay_osm_overpass_20171020.osm.pbf"),
                           str(SF_BAY / "West-Oakland.osm.bz2")], "min_pixels": 1},
        "filters": {"min_labels_v1": False, "low_variance_v1": False, "saturation_v1": False},
        "questions": {"enabled": False},
        "output": {"dir": str(out), "samples_per_shard": 1000},
    })  # fmt: skip


def _rows(recipe: Recipe) -> list[dict[str, Any]]:
    out = recipe.output.dir
    ctx, plan, _ = prepare(recipe, out)
    out.mkdir(parents=True, exist_ok=True)
    run_shard(ctx, 0, plan.shard_tiles(0))
    return pq.read_table(out / "stac-000000.samples.parquet").to_pylist()


def test_stand_in_stac_over_http_picks_the_least_cloudy_item_and_records_it(
    served: Files, catalog: Path, tmp_path: Path
) -> None:
    rows = _rows(_recipe(tmp_path / "http", f"{served.url}/catalog.json"))
    kept = [r for r in rows if r["status"] == "kept"]
    assert kept
    for r in kept:
        assert r["item_id"] in {"west-2001", "east-2001"}  # never the cloudier west-1999
        assert r["collection"] == COLLECTION and r["acquired"] == "2001-06-01T18:30:00Z"
        assert r["asset_href"] == f"{served.url}/items/{r['item_id']}.tif"
    assert {r["item_id"] for r in kept} == {"west-2001", "east-2001"}  # both halves used
    sizes = sum(p.stat().st_size for p in (catalog.parent / "items").glob("*.tif"))
    assert 0 < served.bytes < sizes  # byte ranges: windows, not whole files
    local = _rows(_recipe(tmp_path / "local", str(catalog)))  # the same catalogue from disk
    same = {r["key"]: (r["item_id"], r["phash"], r["dhash"]) for r in local}
    assert {r["key"]: (r["item_id"], r["phash"], r["dhash"]) for r in rows} == same


def test_stand_in_stac_filters_by_date_and_cloud_cover(served: Files, tmp_path: Path) -> None:
    url = f"{served.url}/catalog.json"
    rows = _rows(_recipe(tmp_path / "old", url, datetime="1999-01-01/1999-12-31"))
    kept = [r for r in rows if r["status"] == "kept"]
    assert kept and {r["item_id"] for r in kept} == {"west-1999"}
    assert {r["acquired"] for r in kept} == {"1999-07-15T18:30:00Z"}
    # the east half has no 1999 item: its cells are not planned (the area is cut to the
    # footprint of the matching items)
    assert {r["item_id"] for r in rows} == {"west-1999"}
    assert max(r["bbox"]["west"] for r in rows) < -122.30
    with pytest.raises(FatalError, match="no item matches"):
        prepare(_recipe(tmp_path / "none", url, max_cloud_cover=1), tmp_path / "none")


def test_stand_in_stac_asset_that_fails_rejects_its_tiles_and_the_shard_completes(
    served: Files, tmp_path: Path
) -> None:
    served.fail_paths = {"/items/west-2001.tif"}
    rows = _rows(_recipe(tmp_path / "fault", f"{served.url}/catalog.json"))
    by_item: dict[str, set[str]] = {}
    for r in rows:
        by_item.setdefault(r["item_id"], set()).add(r["reject_reason"] or "kept")
    assert by_item["west-2001"] == {"error"}
    assert "kept" in by_item["east-2001"]
    errors = {r["error"] for r in rows if r["item_id"] == "west-2001"}
    assert all("STAC asset" in e and "west-2001.tif: cannot be read" in e for e in errors), errors


def test_a_catalogue_that_is_not_there_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(FatalError, match=r"imagery\.catalog .* not a readable STAC catalogue"):
        prepare(_recipe(tmp_path / "o", str(tmp_path / "missing.json")), tmp_path / "o")
