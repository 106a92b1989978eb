"""The Earth Engine imagery source (``type: earthengine``) with the real ``earthengine-api``
client over HTTP against a stand-in API on 127.0.0.1 (tests/ee_server.py): a service account
key whose token endpoint is the stand-in, pixels computed from the real Helsinki Sentinel-2
sample. A live test runs only when real credentials are in the environment.

Tolerance: on the scene's own grid (10 m, UTM 35N) the stand-in's pixels and a local read of
the same windows are identical; at 20 m (the mean, per tile in the stand-in, per block
locally) every valid pixel is within 1% of the local value.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from geoweave.builders.prepare import prepare
from geoweave.builders.recipe import Recipe
from geoweave.builders.shard import run_shard
from geoweave.errors import FatalError
from geoweave.sources import ee_client
from geoweave.sources.earthengine import EarthEngineOptions, EarthEngineSource
from geoweave.sources.imagery import GeoTiffSource
from geoweave.tile import Tile
from tests.conftest import HELSINKI, run_main, shard_rows
from tests.ee_eval import COLLECTION, S2_FILE
from tests.ee_server import PROJECT, TOKEN, EarthEngineStandIn

ee = pytest.importorskip("ee")

CORINE = HELSINKI / "Clc2018_Seurasaari.tif"
BBOX = (24.8784, 60.1757, 24.8913, 60.1865)  # Seurasaari island
BANDS = ["B4", "B3", "B2", "B8"]
LOCAL_BANDS = [3, 2, 1, 4]  # the file holds B2, B3, B4, B8
CREDENTIAL_VARS = (
    ee_client.ENV_KEY,
    ee_client.ENV_ADC,
    ee_client.ENV_PROJECT,
    "GOOGLE_CLOUD_PROJECT",
)
# read at import, before this module's fixture swaps the environment for the stand-in's
REAL_ENV = {k: os.environ[k] for k in CREDENTIAL_VARS if os.environ.get(k)}
REAL_HOME = os.environ.get("HOME", "")
LIVE = bool(
    REAL_ENV.get(ee_client.ENV_KEY)
    or REAL_ENV.get(ee_client.ENV_ADC)
    or Path("~/.config/earthengine/credentials").expanduser().is_file()
)

pytestmark = pytest.mark.skipif(not S2_FILE.exists(), reason="shared Helsinki sample not present")


def _source(url: str, **opts: Any) -> EarthEngineSource:
    base = {"collection": COLLECTION, "start": "2021-09-01", "end": "2021-10-01", "bands": BANDS,
            "url": url, "deadline_s": 1.0, "retries": 2, "backoff_s": 0.01,
            "cloud_mask": "s2_scl"}  # fmt: skip
    return EarthEngineSource(EarthEngineOptions.model_validate(base | opts), "s2")


def _recipe(out: Path, imagery: dict[str, Any]) -> Recipe:
    return Recipe.model_validate({
        "name": "ee", "area": {"bbox": BBOX},
        "imagery": [{"name": "s2", "license": "contains modified Copernicus Sentinel data 2021",
                     **imagery}],
        "tiles": {"size_px": 16, "gsd_m": [10]},
        "labels": {"landcover": {"path": str(CORINE), "legend": "corine_fi", "name": "corine"}},
        "filters": {"min_labels_v1": False, "nodata_v1": {"max_fraction": 0.95}},
        "questions": {"enabled": False},
        "output": {"dir": str(out), "samples_per_shard": 1000},
    })  # fmt: skip


def _ee(url: str, **opts: Any) -> dict[str, Any]:
    return {"type": "earthengine", "collection": COLLECTION, "start": "2021-09-01",
            "end": "2021-10-01", "bands": BANDS, "url": url, "deadline_s": 1.0, "retries": 2,
            "backoff_s": 0.01, **opts}  # fmt: skip


LOCAL = {"path": str(S2_FILE), "bands": [3, 2, 1], "nodata": 0, "scale": [0, 3000]}


@pytest.mark.skipif(not LIVE, reason="no Earth Engine credentials in the environment")
def test_live_earth_engine_sentinel2_composite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real high-volume endpoint: a cloud-masked Sentinel-2 median over the island."""
    for k in CREDENTIAL_VARS:
        monkeypatch.delenv(k, raising=False)
    for k, v in REAL_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("HOME", REAL_HOME)
    ee_client._live.clear()
    imagery = {"type": "earthengine", "collection": COLLECTION, "start": "2021-06-01",
               "end": "2021-09-01", "max_cloud_cover": 30, "cloud_mask": "s2_scl",
               "bands": ["B4", "B3", "B2"]}  # fmt: skip
    rows = shard_rows(_recipe(tmp_path / "live", imagery))
    assert rows and {r["collection"] for r in rows} == {COLLECTION}
    assert any(r["status"] == "kept" for r in rows), [r["error"] for r in rows]


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EarthEngineStandIn]:
    """The stand-in, and this module's environment: its service account key, no other
    credentials, and the client's deprecated-asset lookup stubbed (it fetches a Google URL)."""
    srv = EarthEngineStandIn().start()
    key = srv.service_account(tmp_path_factory.mktemp("ee") / "key.json")
    with pytest.MonkeyPatch.context() as mp:
        for k in CREDENTIAL_VARS:
            mp.delenv(k, raising=False)
        mp.setenv(ee_client.ENV_KEY, str(key))
        mp.setenv("HOME", str(key.parent))  # no `earthengine authenticate` token
        mp.setattr(ee.deprecation, "_FetchDataCatalogStac", lambda: {})
        ee_client._live.clear()
        yield srv
    srv.stop()
    ee_client._live.clear()


@pytest.fixture
def server(standin: EarthEngineStandIn) -> EarthEngineStandIn:
    standin.reset()
    return standin


def _tiles(gsd: float, n: int = 6) -> list[Tile]:
    """A row of tiles across the island on the UTM 35N grid."""
    size = 16
    col0, row = int(382340 // (gsd * size)) + 1, int(6673500 // (gsd * size))
    return [Tile(f"t{i}", "s2", "EPSG:32635", gsd, size, col0 + i, row) for i in range(n)]


def _local(tiles: list[Tile]) -> list[Any]:
    src = GeoTiffSource("s2", S2_FILE, bands=[3, 2, 1], nodata=0, scale=(0, 3000))
    return [(img.data[np.array(LOCAL_BANDS) - 1], img.valid) for img in src.read(tiles)]


@pytest.mark.parametrize("file_format", ["npy", "geotiff"])
@pytest.mark.parametrize("gsd", [10.0, 20.0])
def test_stand_in_pixels_match_the_same_windows_read_locally(
    server: EarthEngineStandIn, file_format: str, gsd: float
) -> None:
    tiles = _tiles(gsd)
    # the clear scene only (the cloudy one filtered out): a composite of one image
    src = _source(server.url, file_format=file_format, dtype="uint16", max_cloud_cover=20)
    images = src.read(tiles)
    for img, (data, valid) in zip(images, _local(tiles), strict=True):
        assert not isinstance(img, Exception), img
        assert img.data.dtype == np.uint16 and img.data.shape == (4, 16, 16)
        assert (img.valid == valid).mean() >= 0.99
        both = img.valid & valid
        if not valid.any():  # a tile east of the scene
            assert not img.valid.any() and not img.data.any()
            continue
        if gsd == 10.0:
            assert np.array_equal(img.data, data) and np.array_equal(img.valid, valid)
        else:
            diff = np.abs(img.data.astype(float) - data)[:, both]
            assert (diff <= np.maximum(1.0, 0.01 * data[:, both])).all(), diff.max()


def test_stand_in_cloud_mask_and_cloud_filter_reach_the_server(server: EarthEngineStandIn) -> None:
    """The collection holds the real scene and a cloudy copy (a band of cloud over rows
    20-60%); a median of both differs there unless the cloud is masked or filtered out."""
    # the west half of the scene, all its cloud rows
    tiles = [Tile("west", "s2", "EPSG:32635", 10.0, 128, 298, 5213)]
    ((local, _valid),) = _local(tiles)
    for opts, same in [({"cloud_mask": "s2_scl"}, True), ({"cloud_mask": "s2_qa60"}, True),
                       ({"cloud_mask": "none", "max_cloud_cover": 20}, True),
                       ({"cloud_mask": "none", "composite": "mosaic"}, True),
                       ({"cloud_mask": "none"}, False)]:  # fmt: skip
        (img,) = _source(server.url, dtype="uint16", deadline_s=20, **opts).read(tiles)
        assert not isinstance(img, Exception), img
        assert np.array_equal(img.data, local) is same, opts
    text = json.dumps(server.expressions[-1])
    assert COLLECTION in text and "2021-09-01" in text and "2021-10-01" in text
    assert json.dumps(server.expressions[2]).count("CLOUDY_PIXEL_PERCENTAGE") == 1


def test_stand_in_build_records_provenance_and_matches_a_local_build(
    server: EarthEngineStandIn, tmp_path: Path
) -> None:
    recipe = _recipe(tmp_path / "ee", _ee(server.url, cloud_mask="s2_scl", max_cloud_cover=50))
    rows = shard_rows(recipe)
    kept = [r for r in rows if r["status"] == "kept"]
    assert kept and len(server.pixel_requests) == len(rows)  # one computePixels per tile
    for r in rows:
        assert r["collection"] == COLLECTION and r["acquired"] == "2021-09-01/2021-10-01"
        assert r["item_id"] == f"{COLLECTION} median 2021-09-01/2021-10-01"
        assert r["asset_href"] == f"{server.url}/v1/projects/{PROJECT}/image:computePixels"
        assert r["license"].startswith("contains modified Copernicus Sentinel data 2021")
    local_recipe = _recipe(tmp_path / "local", LOCAL)
    local = {r["key"]: r for r in shard_rows(local_recipe)}
    # the local plan stops at the scene's edge; Earth Engine's covers the area: the tiles
    # beyond the scene have no pixels there
    assert set(local) < {r["key"] for r in rows}
    for r in rows:
        same = local.get(r["key"])
        if same is None:
            assert r["reject_reason"] == "no_imagery_data"
            continue
        assert (r["status"], r["reject_reason"]) == (same["status"], same["reject_reason"])
        assert (r["phash"], r["dhash"]) == (same["phash"], same["dhash"])

    def jpegs(out: Path) -> dict[str, bytes]:
        t = pq.read_table(out / "ee-000000.parquet", columns=["key", "jpg"]).to_pylist()
        return {r["key"]: r["jpg"] for r in t}

    assert jpegs(recipe.output.dir) == jpegs(local_recipe.output.dir)  # the very same pixels


def _island_tile(tiles: list[Tile]) -> Tile:
    """The tile over the middle of the island."""
    from pyproj import Transformer

    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32635", always_xy=True)
    x, y = to_utm.transform(24.8845, 60.1815)
    return next(
        t for t in tiles if t.bounds[0] <= x < t.bounds[2] and t.bounds[1] <= y < t.bounds[3]
    )


@pytest.mark.parametrize(("fault", "reason"), [("429", "HTTP 429"), ("503", "HTTP 503"),
                                               ("stall", "TimeoutError")])  # fmt: skip
def test_stand_in_fault_retries_the_tile_then_rejects_it_with_the_reason_and_the_shard_completes(
    server: EarthEngineStandIn, tmp_path: Path, fault: str, reason: str
) -> None:
    recipe = _recipe(tmp_path / "f", _ee(server.url, cloud_mask="s2_scl"))
    ctx, plan, _ = prepare(recipe, recipe.output.dir)
    tiles = plan.shard_tiles(0)
    bad = _island_tile(tiles)
    origin = (bad.transform.c, bad.transform.f)
    server.fault_at, server.faults, server.stall_s = {origin: fault}, ["429", "503"], 2.5
    recipe.output.dir.mkdir(parents=True)
    run_shard(ctx, 0, tiles)
    assert (recipe.output.dir / "ee-000000.stats.json").is_file()  # the shard completed
    table = pq.read_table(recipe.output.dir / "ee-000000.samples.parquet")
    rows = {r["key"]: r for r in table.to_pylist()}
    row = rows.pop(bad.key)
    assert (row["status"], row["reject_reason"]) == ("rejected", "error")
    assert row["rejected_by"] == "read"
    assert reason in row["error"] and "after 3 attempts" in row["error"], row["error"]
    assert server.pixel_requests.count(origin) == 3  # retried twice (retries: 2)
    assert len(server.pixel_requests) == len(tiles) + 2 + 2  # and the two transient faults
    assert all(r["reject_reason"] != "error" for r in rows.values())  # retried, then read
    assert any(r["status"] == "kept" for r in rows.values())


def test_stand_in_refused_connection_rejects_the_tiles_and_the_shard_completes(
    standin: EarthEngineStandIn, tmp_path: Path
) -> None:
    gone = EarthEngineStandIn().start()  # answers the plan, then stops listening
    recipe = _recipe(tmp_path / "r", _ee(gone.url))
    ctx, plan, _ = prepare(recipe, recipe.output.dir)
    gone.stop()
    recipe.output.dir.mkdir(parents=True)
    run_shard(ctx, 0, plan.shard_tiles(0))
    rows = pq.read_table(recipe.output.dir / "ee-000000.samples.parquet").to_pylist()
    assert rows and (recipe.output.dir / "ee-000000.stats.json").is_file()
    for r in rows:
        assert (r["status"], r["reject_reason"], r["rejected_by"]) == ("rejected", "error", "read")
        assert "ConnectionError" in r["error"] and "after 3 attempts" in r["error"], r["error"]


def test_stand_in_429_waits_for_retry_after_and_concurrency_is_bounded(
    server: EarthEngineStandIn,
) -> None:
    server.faults, server.retry_after = ["429"], 0.5
    src = _source(server.url, backoff_s=0.0)
    t = time.perf_counter()
    (img,) = src.read(_tiles(10.0, 1))
    assert not isinstance(img, Exception) and time.perf_counter() - t >= 0.5
    assert len(server.pixel_requests) == 2
    server.delay_s = 0.1
    images = _source(server.url, max_concurrency=2).read(_tiles(10.0, 6))
    assert not any(isinstance(i, Exception) for i in images)
    assert server.max_in_flight == 2


def _read_in_child(blob: bytes, tiles: list[Tile], out: Any) -> None:
    """A fresh interpreter (as a Ray worker): unpickle the source and read."""
    import pickle

    import ee.deprecation

    ee.deprecation._FetchDataCatalogStac = lambda: {}  # it fetches a Google URL
    images = pickle.loads(blob).read(tiles)
    out.put([str(i) if isinstance(i, Exception) else int(i.valid.sum()) for i in images])


def test_stand_in_source_pickles_without_secrets_and_reads_in_a_fresh_process(
    server: EarthEngineStandIn,
) -> None:
    """What Ray ships to a worker holds no secret: the worker reads the credentials from its
    own environment, initialises its own client and rebuilds the image."""
    import multiprocessing
    import pickle

    src = _source(server.url)
    src.image()
    blob = pickle.dumps(src)
    key = json.loads(Path(os.environ[ee_client.ENV_KEY]).read_text())
    assert b"PRIVATE KEY" not in blob and key["private_key"].splitlines()[5].encode() not in blob
    assert TOKEN.encode() not in blob
    tokens, algorithms = server.paths["/token"], server.paths[f"/v1/projects/{PROJECT}/algorithms"]
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    child = ctx.Process(target=_read_in_child, args=(blob, _tiles(10.0, 2), out))
    child.start()
    try:
        valid = out.get(timeout=120)
    finally:
        child.join(30)
    assert all(isinstance(v, int) and v > 0 for v in valid), valid
    assert server.paths["/token"] > tokens  # its own token, from its own environment
    assert server.paths[f"/v1/projects/{PROJECT}/algorithms"] > algorithms
    assert EarthEngineOptions.model_fields["url"].default == ee.data.HIGH_VOLUME_API_BASE_URL


@pytest.fixture
def fresh_client(server: EarthEngineStandIn) -> Iterator[EarthEngineStandIn]:
    """The next ``connect`` initialises the client again (reads the credentials again)."""
    ee_client._live.clear()
    yield server
    ee_client._live.clear()


def test_missing_credentials_stop_the_build_before_any_work(
    fresh_client: EarthEngineStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ee_client.ENV_KEY)
    recipe = _recipe(tmp_path / "o", _ee(fresh_client.url)).model_dump(mode="json")
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = run_main("run", str(path), "--output", str(tmp_path / "out"), "--no-progress")
    assert result.returncode == 2, result.stderr
    for needed in (ee_client.ENV_KEY, ee_client.ENV_ADC, "earthengine authenticate"):
        assert needed in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("where", ["key JSON in the variable", "key file", "authorized user"])
def test_stand_in_credentials_from_the_other_environment_variables(
    fresh_client: EarthEngineStandIn, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, where: str
) -> None:
    """The key's JSON in EE_SERVICE_ACCOUNT_JSON; GOOGLE_APPLICATION_CREDENTIALS naming the key
    file, or the authorized_user file of `gcloud auth application-default login` (loaded
    only: its token endpoint is Google's whatever the file says)."""
    key = os.environ[ee_client.ENV_KEY]
    if where == "key JSON in the variable":
        monkeypatch.setenv(ee_client.ENV_KEY, Path(key).read_text())
    else:
        monkeypatch.delenv(ee_client.ENV_KEY)
        user = tmp_path / "application_default_credentials.json"
        user.write_text(json.dumps({"type": "authorized_user", "client_id": "c",
                                    "client_secret": "s", "refresh_token": "r",
                                    "token_uri": f"{fresh_client.url}/token",
                                    "quota_project_id": PROJECT}))  # fmt: skip
        monkeypatch.setenv(ee_client.ENV_ADC, key if where == "key file" else str(user))
    if where == "authorized user":  # its token comes from Google's endpoint whatever the file says
        assert ee_client.load_credentials()[1:] == (PROJECT, ee_client.ENV_ADC)
        return
    tokens = fresh_client.paths["/token"]
    (img,) = _source(fresh_client.url).read(_tiles(10.0, 1))
    assert not isinstance(img, Exception) and fresh_client.paths["/token"] == tokens + 1


def test_the_earthengine_authenticate_token_is_the_last_resort(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read only (its refresh goes to Google's token endpoint, which the file cannot change)."""
    for k in CREDENTIAL_VARS:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    token = tmp_path / ".config" / "earthengine" / "credentials"
    token.parent.mkdir(parents=True)
    token.write_text(json.dumps({"refresh_token": "stand-in-refresh", "project": PROJECT}))
    creds, project, origin = ee_client.load_credentials()
    assert (project, origin) == (PROJECT, str(token))
    assert creds.refresh_token == "stand-in-refresh"
    token.write_text(json.dumps({"project": PROJECT}))  # no refresh token: not usable
    with pytest.raises(FatalError, match="earthengine authenticate"):
        ee_client.load_credentials()


@pytest.mark.parametrize(("value", "match"), [
    ('{"type": "authorized_user"}', "not a service account key"),
    ("{not json", "not JSON"),
    ("/no/such/key.json", "cannot read the key file"),
])  # fmt: skip
def test_a_bad_service_account_key_is_bad_input(
    fresh_client: EarthEngineStandIn, monkeypatch: pytest.MonkeyPatch, value: str, match: str
) -> None:
    monkeypatch.setenv(ee_client.ENV_KEY, value)
    with pytest.raises(FatalError, match=f"{ee_client.ENV_KEY}: {match}"):
        _source(fresh_client.url)


def test_refused_credentials_name_their_origin_never_their_content(
    fresh_client: EarthEngineStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    fresh_client.refuse_tokens = True
    with pytest.raises(FatalError, match=f"refused the credentials from {ee_client.ENV_KEY}") as e:
        _source(fresh_client.url)
    key = json.loads(Path(os.environ[ee_client.ENV_KEY]).read_text())["private_key"]
    secret = key.splitlines()[5]
    assert secret not in str(e.value) and secret not in caplog.text
    assert "PRIVATE KEY" not in str(e.value)


def test_a_project_the_server_refuses_is_bad_input(fresh_client: EarthEngineStandIn) -> None:
    match = f"refused .* project someone-else .*{ee_client.ENV_PROJECT}"
    with pytest.raises(FatalError, match=match):
        _source(fresh_client.url, project="someone-else")


def test_no_matching_image_an_unknown_band_or_no_server_is_bad_input(
    fresh_client: EarthEngineStandIn,
) -> None:
    from tests.conftest import free_port

    with pytest.raises(FatalError, match=f"no image of {COLLECTION} matches start 2020-01-01"):
        _source(fresh_client.url, start="2020-01-01", end="2020-02-01")
    with pytest.raises(FatalError, match=r"bands: \['B99'\] not in"):
        _source(fresh_client.url, bands=["B4", "B3", "B99"])
    ee_client._live.clear()
    with pytest.raises(FatalError, match="did not answer"):
        _source(f"http://127.0.0.1:{free_port()}")


def test_credentials_in_the_recipe_are_refused(tmp_path: Path) -> None:
    with pytest.raises(FatalError, match="credentials never go in the recipe"):
        _recipe(tmp_path, _ee("http://127.0.0.1:1", credentials="key.json")).check_components()
