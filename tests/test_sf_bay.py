"""End to end on the real SF Bay sample: CLI -> local Ray -> tars, Parquet, DuckDB manifest."""

from __future__ import annotations

import json
import re
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
import webdataset as wds

from geoweave.sources.phrases import OVERRIDES, element_phrase, phrase, plural
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


def _words(text: str) -> str:
    """Lower-case words separated by single spaces, padded: whole-phrase matching by ``in``."""
    return " " + " ".join(re.findall(r"[a-z0-9]+", text.lower())) + " "


def mentioned_phrases(text: str, vocab: set[str]) -> set[str]:
    """Label phrases a caption names, as whole words ("park" is not in "parking lot")."""
    words = _words(text)
    return {p for p in vocab if _words(p) in words or _words(plural(p, 2)) in words}


def is_faithful(mentioned: set[str], present: set[str]) -> bool:
    """Each mentioned phrase is a present phrase or a whole-word part of one ("road" of
    "service road")."""
    return all(any(_words(m) in _words(p) for p in present) for m in mentioned)


def test_whole_phrase_matching_is_strict() -> None:
    vocab = {"park", "parking lot", "road", "service road"}
    assert mentioned_phrases("A parking lot and a service road.", vocab) == {
        "parking lot",
        "road",
        "service road",
    }
    assert is_faithful({"parking lot", "road", "service road"}, {"parking lot", "service road"})
    assert not is_faithful({"park"}, {"parking lot"})  # the substring check let this through
    assert mentioned_phrases("2 parks.", vocab) == {"park"}


def test_captions_mention_only_tags_present_in_the_sample(build: Path) -> None:
    con = _manifest(build)
    vocab = _vocabulary(con)
    rows = con.execute("SELECT osm, captions, license FROM samples WHERE status='kept'").fetchall()
    assert rows
    for osm, captions, license_ in rows:
        present = {p for e in osm if (p := element_phrase(dict(e["tags"])))}
        assert captions
        for cap in captions:
            mentioned = mentioned_phrases(cap["text"], vocab)
            assert is_faithful(mentioned, present), (cap["text"], present)
            # geoweave's own scorer (faithfulness_v1, on by default) agrees: nothing invented
            assert cap["precision"] == 1.0 and list(cap["unsupported"]) == [], cap
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


def test_funnel_names_the_filter_of_every_reject(build: Path) -> None:
    con = _manifest(build)
    funnel = con.execute(
        "SELECT step, rejected, remaining FROM funnel ORDER BY position"
    ).fetchall()
    steps = [s for s, _, _ in funnel]
    assert steps[:3] == ["plan", "read", "join"]
    assert steps.index("nodata_v1") < steps.index("low_variance_v1") < steps.index("min_labels_v1")
    from geoweave.builders.recipe import DEFAULT_PASSES

    # the shard stages end with encode; the corpus passes that can reject come last
    assert steps[steps.index("encode") + 1 :] == [p for p in DEFAULT_PASSES if p != "statistics_v1"]
    by = dict(
        con.execute(
            "SELECT rejected_by, count(*) FROM samples WHERE status = 'rejected' GROUP BY 1"
        ).fetchall()
    )
    assert {s: n for s, n, _ in funnel if n} == by
    kept = con.execute("SELECT count(*) FROM samples WHERE status = 'kept'").fetchone()[0]
    assert funnel[-1][2] == kept
    reasons = dict(
        con.execute(
            "SELECT reject_reason, any_value(rejected_by) FROM samples "
            "WHERE status = 'rejected' GROUP BY 1"
        ).fetchall()
    )
    assert reasons["too_few_labels"] == "min_labels_v1"
    assert reasons["blank_or_low_variance"] == "low_variance_v1"


def test_statistics_pass_matches_the_samples_table(build: Path) -> None:
    con = _manifest(build)
    stats = con.execute(
        "SELECT source, gsd_m, status, tiles, captions, qa_pairs FROM statistics_v1 ORDER BY ALL"
    ).fetchall()
    direct = con.execute(
        "SELECT source, gsd_m, status, count(*), sum(len(captions)), sum(len(qa)) "
        "FROM samples GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    assert stats == direct and stats
    marker = json.loads((build / "_passes" / "statistics_v1.json").read_text())
    assert marker["rows"] == len(stats) and len(marker["fingerprint"]) == 64


def test_samples_carry_the_item_the_source_read(build: Path) -> None:
    con = _manifest(build)
    items = con.execute("SELECT DISTINCT item_id FROM samples WHERE status = 'kept'").fetchall()
    assert items == [("sf_bay_landsat7_falsecolor_30m.tif",)]
