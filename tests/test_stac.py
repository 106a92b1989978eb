"""The STAC imagery source against a stand-in: a static catalogue with COG assets made from
the SF Bay sample (tests/data/stac_fixture.py), served over HTTP on 127.0.0.1 with byte
ranges (tests/http_files.py), read by the real pystac and rasterio/GDAL (/vsicurl/)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from geoweave.builders.prepare import prepare
from geoweave.builders.recipe import Recipe
from geoweave.errors import FatalError
from tests.conftest import SF_BAY, shard_rows
from tests.data.stac_fixture import COLLECTION, write_catalog
from tests.http_files import Files

# across the west half (to -122.306), the overlap (-122.364 to -122.306) and the east half
BBOX = (-122.42, 37.78, -122.27, 37.83)
EAST = (-122.29, 37.78, -122.27, 37.83)  # east of every west-half item


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


def test_stand_in_stac_over_http_picks_the_least_cloudy_item_and_records_it(
    served: Files, catalog: Path, tmp_path: Path
) -> None:
    rows = shard_rows(_recipe(tmp_path / "http", f"{served.url}/catalog.json"))
    kept = [r for r in rows if r["status"] == "kept"]
    assert kept
    for r in kept:
        assert r["item_id"] in {"west-2001", "east-2001"}  # never the cloudier west-1999
        assert r["collection"] == COLLECTION and r["acquired"] == "2001-06-01T18:30:00Z"
        assert r["asset_href"] == f"{served.url}/items/{r['item_id']}.tif"
    assert {r["item_id"] for r in kept} == {"west-2001", "east-2001"}  # both halves used
    sizes = sum(p.stat().st_size for p in (catalog.parent / "items").glob("*.tif"))
    assert 0 < served.bytes < sizes  # byte ranges: windows, not whole files
    local = shard_rows(_recipe(tmp_path / "local", str(catalog)))  # the same catalogue from disk
    same = {r["key"]: (r["item_id"], r["phash"], r["dhash"]) for r in local}
    assert {r["key"]: (r["item_id"], r["phash"], r["dhash"]) for r in rows} == same


def test_stand_in_stac_filters_by_date_and_cloud_cover(served: Files, tmp_path: Path) -> None:
    url = f"{served.url}/catalog.json"
    rows = shard_rows(_recipe(tmp_path / "old", url, datetime="1999-01-01/1999-12-31"))
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
    rows = shard_rows(_recipe(tmp_path / "fault", f"{served.url}/catalog.json"))
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


class _StacApi(Files):
    """A stand-in STAC API over the fixture's items: a landing page that conforms to item
    search and ``/search`` (GET and POST), filtering by collections and datetime."""

    def __init__(self, folder: Path) -> None:
        import http.server
        import json

        items = [json.loads(p.read_text()) for p in sorted((folder / "items").glob("*.json"))]
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                from urllib.parse import parse_qs, urlparse

                url = urlparse(self.path)
                if url.path in ("", "/"):
                    self._send(api.landing())
                elif url.path == "/search":
                    q = {k: v[0] for k, v in parse_qs(url.query).items()}
                    bbox = [float(v) for v in q["bbox"].split(",")] if "bbox" in q else None
                    self._send(api.search(q.get("collections"), q.get("datetime"), bbox))
                else:
                    self.send_error(404)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                cols = ",".join(body.get("collections") or [])
                self._send(api.search(cols or None, body.get("datetime"), body.get("bbox")))

        import http.server as hs

        hs.ThreadingHTTPServer.__init__(self, ("127.0.0.1", 0), Handler)
        self.requests = self.bytes = self.fail = 0
        self.fail_paths: set[str] = set()
        self.items, self.assets = items, Files(folder).start()
        self.searches: list[tuple[str | None, str | None]] = []
        self.boxes: list[list[float] | None] = []

    def landing(self) -> dict[str, Any]:
        return {"type": "Catalog", "id": "stand-in", "stac_version": "1.0.0",
                "description": "stand-in STAC API",
                "conformsTo": ["https://api.stacspec.org/v1.0.0/core",
                               "https://api.stacspec.org/v1.0.0/item-search"],
                "links": [{"rel": "self", "href": self.url}, {"rel": "root", "href": self.url},
                          {"rel": "search", "href": f"{self.url}/search", "method": "GET", "type": "application/geo+json"},
                          {"rel": "search", "href": f"{self.url}/search", "method": "POST", "type": "application/geo+json"}]}  # fmt: skip

    def search(
        self, collections: str | None, datetime: str | None, bbox: list[float] | None = None
    ) -> dict[str, Any]:
        import shapely
        from shapely.geometry import shape

        self.searches.append((collections, datetime))
        self.boxes.append(bbox)
        out = []
        for it in self.items:
            if collections and it["collection"] not in collections.split(","):
                continue
            if bbox is not None and not shape(it["geometry"]).intersects(shapely.box(*bbox)):
                continue
            start, _, end = (datetime or "/").partition("/")
            day = it["properties"]["datetime"][:10]
            if (start not in ("", "..") and day < start[:10]) or (
                end not in ("", "..") and day > end[:10]
            ):
                continue
            asset = {**it["assets"]["visual"], "href": f"{self.assets.url}/items/{it['id']}.tif"}
            out.append({**it, "links": [], "assets": {"visual": asset}})
        return {"type": "FeatureCollection", "features": out, "links": []}


def test_stand_in_stac_api_is_searched_with_pystac_client(catalog: Path, tmp_path: Path) -> None:
    api = _StacApi(catalog.parent).start()
    east_only = Recipe.model_validate({
        **_recipe(tmp_path / "east", api.url).model_dump(), "area": {"bbox": EAST}
    })  # fmt: skip
    try:
        rows = shard_rows(_recipe(tmp_path / "api", api.url, collections=[COLLECTION],
                             datetime="2001-01-01/2001-12-31"))  # fmt: skip
        searched = len(api.boxes)
        east = shard_rows(east_only)
    finally:
        api.shutdown()
        api.assets.shutdown()
    kept = [r for r in rows if r["status"] == "kept"]
    assert kept and {r["item_id"] for r in kept} == {"west-2001", "east-2001"}
    assert api.searches and all(s[0] == COLLECTION for s in api.searches[:searched])
    assert "2001-01-01" in (api.searches[0][1] or "")
    # the search asks for the area's box only (pystac-client sends it)
    assert api.boxes[:searched] == [list(BBOX)] * searched
    assert api.boxes[searched:] == [list(EAST)] * (len(api.boxes) - searched)
    assert {r["item_id"] for r in east if r["status"] == "kept"} == {"east-2001"}
    assert all(r["asset_href"].startswith(api.assets.url) for r in kept)


def test_all_dates_makes_one_sample_per_acquisition_day_of_a_cell_grouped_in_the_manifest(
    catalog: Path, tmp_path: Path
) -> None:
    import io

    import duckdb
    import numpy as np
    import pyarrow.parquet as pq
    from PIL import Image

    from geoweave.manifests.manifest_builder import write_manifest

    out = tmp_path / "dates"
    rows = shard_rows(_recipe(out, str(catalog), choose="all_dates"))
    assert len({r["key"] for r in rows}) == len(rows)  # one key per (cell, day)
    by_cell: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        day = r["acquired"][:10].replace("-", "")
        assert r["key"] == f"l7_30m_{r['cell'].split('_', 1)[1]}_{day}"
        by_cell.setdefault(r["cell"], {})[day] = r
    jpegs = pq.read_table(out / "stac-000000.parquet", columns=["key", "jpg"]).to_pylist()
    brightness = {r["key"]: np.asarray(Image.open(io.BytesIO(r["jpg"]))).mean() for r in jpegs}
    days = {c: tuple(sorted(d)) for c, d in by_cell.items()}
    # the west half has a 1999 and a 2001 item, the east half only 2001
    assert set(days.values()) == {("19990715", "20010601"), ("20010601",)}
    compared = 0
    for dated in by_cell.values():
        if len(dated) == 2:
            old, new = dated["19990715"], dated["20010601"]
            assert old["item_id"] == "west-1999" and new["item_id"] in {"west-2001", "east-2001"}
            assert old["bbox"] == new["bbox"]  # the same ground
            if old["status"] == new["status"] == "kept":  # 1999's item is 40 DN brighter
                assert brightness[old["key"]] > brightness[new["key"]] + 20
                compared += 1
    assert compared > 5
    two = sum(len(d) == 2 for d in by_cell.values())
    assert two and two < len(by_cell)
    write_manifest(out, "stac")
    con = duckdb.connect(str(out / "manifest.duckdb"), read_only=True)
    cells = con.execute("SELECT cell, dates, keys, acquired FROM cells").fetchall()
    assert len(cells) == len(by_cell)
    for cell, n_dates, keys, acquired in cells:
        assert n_dates == len(by_cell[cell]) and acquired == sorted(acquired)
        assert keys == [by_cell[cell][d]["key"] for d in sorted(by_cell[cell])]


def _landcover_like(image: Path, out: Path, built_west_of: float | None) -> Path:
    """A land-cover raster on the image's own grid: tree cover (10), and built-up (50) west
    of the longitude ``built_west_of``."""
    import numpy as np
    import rasterio
    from rasterio.warp import transform

    with rasterio.open(image) as src:
        profile = {"driver": "GTiff", "width": src.width, "height": src.height, "count": 1,
                   "dtype": "uint8", "crs": src.crs, "transform": src.transform, "nodata": 0}  # fmt: skip
        classes = np.full((src.height, src.width), 10, dtype=np.uint8)
        if built_west_of is not None:
            xs = src.transform.c + src.transform.a * (np.arange(src.width) + 0.5)
            lons, _ = transform(src.crs, "EPSG:4326", xs.tolist(), [src.bounds.top] * src.width)
            classes[:, np.asarray(lons) < built_west_of] = 50
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(classes, 1)
    return out


def test_change_between_dates_from_land_cover_of_each_date(catalog: Path, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from geoweave.manifests.passes import PASSES_DIR, run_passes

    image = SF_BAY / "sf_bay_landsat7_falsecolor_30m.tif"
    old = _landcover_like(image, tmp_path / "lc1999.tif", None)
    new = _landcover_like(image, tmp_path / "lc2001.tif", -122.39)
    out = tmp_path / "change"
    base = _recipe(out, str(catalog), choose="all_dates").model_dump()
    base["labels"]["landcover"] = {
        "path": str(new),
        "by_date": {"1999": str(old), "2001": str(new)},
    }
    rows = shard_rows(Recipe.model_validate(base))
    kept = [r for r in rows if r["status"] == "kept"]
    assert {(r["acquired"][:4], r["landcover_date"]) for r in kept} == {
        ("1999", "1999"),
        ("2001", "2001"),
    }
    run_passes(out, "stac", [("change_v1", {"min_change": 0.1})])
    changes = pq.read_table(out / PASSES_DIR / "change_v1.parquet").to_pylist()
    by_key = {r["key"]: r for r in kept}
    assert changes
    for c in changes:
        later, earlier = by_key[c["key"]], by_key[c["earlier_key"]]
        assert later["cell"] == earlier["cell"] == c["cell"]
        assert (earlier["acquired"][:4], later["acquired"][:4]) == ("1999", "2001")
        assert c["change"].startswith("Between 1999 and 2001, ")
        assert (
            "built-up rose from 0% to" in c["change"]
            and "tree cover fell from 100% to" in c["change"]
        )
        assert later["bbox"]["west"] < -122.39  # only cells with built-up ground in 2001
    whole = [c for c in changes if "to 100%" in c["change"]]
    assert whole and all(c["largest_change"] == 1.0 for c in whole)
    # cells with both dates east of the change: no row
    pairs = {r["cell"] for r in kept if r["acquired"][:4] == "1999"}
    east = {r["cell"] for r in kept if r["cell"] in pairs and r["bbox"]["west"] > -122.38}
    assert east and not east & {c["cell"] for c in changes}
