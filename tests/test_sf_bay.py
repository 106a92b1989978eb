"""End to end on the real SF Bay sample: CLI -> local Ray -> tars, Parquet, DuckDB manifest."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
import webdataset as wds

from geoweave.captioning.phrases import OVERRIDES, element_phrase, phrase, plural
from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sfbay") / "out"
    res = run_cli("run", str(REPO / "examples/sf-bay.yaml"), "--output", str(out), "--no-progress")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "tiles planned" in res.stdout and "manifest" in res.stdout
    return out


def _manifest(out: Path) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(out / "manifest.duckdb"), read_only=True)


def _tar_samples(out: Path) -> list[dict]:
    urls = sorted(str(p) for p in out.glob("sf-bay-*.tar"))
    return list(wds.WebDataset(urls, shardshuffle=False).decode("rgb8"))


def test_example_builds_enough_tiles_at_two_gsds_in_several_shards(build: Path) -> None:
    con = _manifest(build)
    by_gsd = dict(
        con.execute("SELECT gsd_m, count(*) FROM samples WHERE status='kept' GROUP BY 1").fetchall()
    )
    assert set(by_gsd) == {30.0, 60.0}
    assert sum(by_gsd.values()) >= 100
    assert con.execute("SELECT count(*) FROM shards WHERE status='complete'").fetchone()[0] >= 5


def test_counts_agree_across_tar_parquet_and_manifest(build: Path) -> None:
    tar = _tar_samples(build)
    parquet = pq.read_table(sorted(build.glob("sf-bay-*[0-9].parquet")), columns=["key"])
    con = _manifest(build)
    kept = {r[0] for r in con.execute("SELECT key FROM samples WHERE status='kept'").fetchall()}
    tar_keys = [s["__key__"] for s in tar]
    pq_keys = parquet.column("key").to_pylist()
    assert len(tar_keys) == len(set(tar_keys)) == len(kept)
    assert set(tar_keys) == set(pq_keys) == kept
    first = tar[0]
    assert first["jpg"].shape == (24, 24, 3)
    assert json.loads(first["json"]) if isinstance(first["json"], bytes) else first["json"]


def test_hugging_face_datasets_reads_the_parquet_shards(build: Path, tmp_path: Path) -> None:
    import os

    import datasets

    os.environ["HF_HUB_OFFLINE"] = "1"
    files = sorted(str(p) for p in build.glob("sf-bay-*[0-9].parquet"))
    ds = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=str(tmp_path))
    n = _manifest(build).execute("SELECT count(*) FROM samples WHERE status='kept'").fetchone()[0]
    assert ds.num_rows == n
    row = ds[0]
    assert row["jpg"][:2] == b"\xff\xd8" and row["caption"] and row["status"] == "kept"
    assert isinstance(json.loads(row["osm"][0]["tags"]), dict)


def test_every_planned_tile_appears_exactly_once(build: Path) -> None:
    con = _manifest(build)
    plan = pq.read_table(build / "plan.parquet", columns=["key"]).column("key").to_pylist()
    keys = [r[0] for r in con.execute("SELECT key FROM samples").fetchall()]
    assert len(keys) == len(set(keys)) == len(plan)
    assert set(keys) == set(plan)
    bad = con.execute(
        "SELECT count(*) FROM samples WHERE (status='kept') = (reject_reason IS NOT NULL)"
    ).fetchone()[0]
    assert bad == 0
    assert con.execute("SELECT count(*) FROM rejects").fetchone()[0] == len(plan) - len(
        con.execute("SELECT key FROM samples WHERE status='kept'").fetchall()
    )


def _vocabulary(con: duckdb.DuckDBPyConnection) -> set[str]:
    """Every phrase any tag of the whole build could produce, plus the override phrases."""
    rows = con.execute("SELECT DISTINCT unnest(map_entries(e.tags), recursive := true) FROM "
                       "(SELECT unnest(osm) e FROM samples)").fetchall()  # fmt: skip
    vocab = {p for k, v in rows if (p := phrase(k, v))}
    return vocab | set(OVERRIDES.values())


def test_captions_mention_only_tags_present_in_the_sample(build: Path) -> None:
    con = _manifest(build)
    vocab = _vocabulary(con)
    rows = con.execute("SELECT osm, captions, license FROM samples WHERE status='kept'").fetchall()
    assert rows
    for osm, captions, license_ in rows:
        present = {element_phrase(dict(e["tags"])) for e in osm}
        assert captions
        for cap in captions:
            text = cap["text"]
            mentioned = {p for p in vocab if f" {p} " in f" {text} " or f" {plural(p, 2)}" in text}
            # A mentioned phrase may be part of a longer present one ("road" in "service road").
            stray = {m for m in mentioned if not any(m in p for p in present if p)}
            assert not stray, (text, present)
            assert cap["captioner"] == "template_v1" and cap["prompt_version"]
        assert "OpenStreetMap" in license_


def test_query_command_prints_table_csv_and_json(build: Path) -> None:
    sql = "SELECT status, count(*) AS n FROM samples GROUP BY 1 ORDER BY 1"
    table = run_cli("query", str(build), sql)
    assert table.returncode == 0 and "kept" in table.stdout and "rows)" in table.stdout
    as_json = json.loads(run_cli("query", str(build), sql, "--format", "json").stdout)
    as_csv = run_cli("query", str(build), sql, "--format", "csv").stdout.splitlines()
    assert as_csv[0] == "status,n" and len(as_csv) == len(as_json) + 1
    con = _manifest(build)
    assert {r["status"]: r["n"] for r in as_json} == dict(con.execute(sql).fetchall())
    refused = run_cli("query", str(build), "DELETE FROM samples")
    assert refused.returncode == 2 and "read-only" in refused.stderr


def test_runs_table_records_recipe_versions_and_input_checksums(build: Path) -> None:
    con = _manifest(build)
    recipe, versions, inputs = con.execute("SELECT recipe, versions, inputs FROM runs").fetchone()
    assert json.loads(recipe)["name"] == "sf-bay"
    assert "ray" in json.loads(versions)
    checksums = json.loads(inputs)
    assert any(k.endswith(".osm.pbf") for k in checksums)
    assert all(len(v) == 64 for v in checksums.values())
