"""The human-review round trip against a real Label Studio server on 127.0.0.1: export a
stratified sample as tasks, annotate through the API as a reviewer would (accept, reject,
edit), import, and check that the manifest says exactly that; then the same through files."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest
import yaml

from tests import label_studio_server
from tests.conftest import SF_BAY, run_cli, run_main

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[label_studio_server.Server]:
    srv = label_studio_server.start(tmp_path_factory.mktemp("label-studio"))
    try:
        yield srv
    finally:
        label_studio_server.stop(srv.proc)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real build: template captions and QA over West Oakland at 30 m and 60 m."""
    tmp = tmp_path_factory.mktemp("review-build")
    recipe = {
        "name": "rev",
        "area": {"bbox": [-122.3143, 37.8040, -122.2908, 37.8176]},
        "imagery": [{"name": "l7", "path": str(SF_BAY / "sf_bay_landsat7_falsecolor_30m.tif"),
                     "scale": "none"}],
        "tiles": {"size_px": 16, "gsd_m": [30, 60]},
        "labels": {"osm": [str(SF_BAY / "West-Oakland.osm.bz2")], "min_pixels": 1},
        "filters": {"low_variance_v1": False},
    }  # fmt: skip
    (tmp / "r.yaml").write_text(yaml.safe_dump(recipe))
    res = run_cli("run", str(tmp / "r.yaml"), "-o", str(tmp / "out"), "--no-progress")
    assert res.returncode == 0, res.stderr
    return tmp / "out"


def _sql(out: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(out / "manifest.duckdb"), read_only=True)
    try:
        return con.execute(sql, list(params)).fetchall()
    finally:
        con.close()


def _result(
    captions: list[str] | None, verdict: str, issues: list[str] = ()
) -> list[dict[str, Any]]:  # type: ignore[assignment]
    out: list[dict[str, Any]] = [
        {"from_name": "verdict", "to_name": "image", "type": "choices",
         "value": {"choices": [verdict]}},
    ]  # fmt: skip
    if issues:
        out.append({"from_name": "issues", "to_name": "image", "type": "choices",
                    "value": {"choices": list(issues)}})  # fmt: skip
    if captions is not None:
        out.append({"from_name": "captions", "to_name": "image", "type": "textarea",
                    "value": {"text": captions}})  # fmt: skip
    return out


def test_export_annotate_import_round_trip(
    built: Path, server: label_studio_server.Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from label_studio_sdk import LabelStudio

    out = tmp_path / "out"
    shutil.copytree(built, out)
    monkeypatch.setenv("LABEL_STUDIO_URL", server.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", server.token)
    res = run_main("review", "export", str(out), "--sample", "6", "--stratify-by", "gsd")
    assert res.returncode == 0, res.stderr
    assert server.token not in res.stdout + res.stderr  # the key is never printed
    project = json.loads((out / "_reviews" / "exports.json").read_text())[-1]["project"]
    ls = LabelStudio(base_url=server.url, api_key=server.token)
    tasks = sorted((t.model_dump(mode="json") for t in ls.tasks.list(project=project, fields="all")),
                   key=lambda t: t["data"]["key"])  # fmt: skip
    assert len(tasks) == 6
    gsds = dict(_sql(out, "SELECT key, gsd_m FROM samples WHERE status = 'kept'"))
    assert {gsds[t["data"]["key"]] for t in tasks} == {30.0, 60.0}  # stratified by GSD
    for t in tasks:  # each opens with the generated text as a prediction, and its image
        assert t["data"]["image"].startswith("data:image/jpeg;base64,")
        lines = t["predictions"][0]["result"][0]["value"]["text"]
        assert lines == json.loads(t["data"]["generated"])["captions"] and lines

    keys = [t["data"]["key"] for t in tasks]
    first = json.loads(tasks[2]["data"]["generated"])["captions"]
    edited = ["A hand-written caption of this tile.", *first[1:]]
    ls.annotations.create(id=tasks[0]["id"], result=_result(None, "accept"), project=project)
    ls.annotations.create(id=tasks[1]["id"], result=_result(None, "reject", ["hallucination"]),
                          project=project)  # fmt: skip
    ls.annotations.create(id=tasks[2]["id"], result=_result(edited, "accept"), project=project)
    res = run_main("review", "import", str(out))
    assert res.returncode == 0, res.stderr
    assert "imported 3 new or changed reviews" in res.stdout
    assert "3: 2 accepted, 1 rejected" in res.stdout

    status = dict(_sql(out, "SELECT key, status FROM samples WHERE key IN (?, ?, ?, ?)", *keys[:4]))
    assert status == {keys[0]: "kept", keys[1]: "rejected_by_review", keys[2]: "kept",
                      keys[3]: "kept"}  # fmt: skip
    reason = _sql(out, "SELECT reject_reason, rejected_by FROM samples WHERE key = ?", keys[1])
    assert reason == [("review: hallucination", "review")]
    (caps,) = _sql(out, "SELECT captions FROM samples WHERE key = ?", keys[2])[0]
    assert [c["text"] for c in caps] == edited
    assert caps[0]["captioner"] == "review" and caps[1]["captioner"] == "template_v1"
    (orig,) = _sql(out, "SELECT generated_captions FROM reviews WHERE key = ?", keys[2])[0]
    assert orig == first  # the generated text is kept
    stats = _sql(
        out, "SELECT value, reviewed, acceptance FROM review_stats WHERE dimension = 'captioner'"
    )
    assert stats == [("template_v1", 3, pytest.approx(2 / 3))]

    before = _sql(out, "SELECT * FROM reviews ORDER BY key")
    again = run_main("review", "import", str(out))  # idempotent
    assert "imported 0 new or changed reviews (3 unchanged)" in again.stdout
    assert _sql(out, "SELECT * FROM reviews ORDER BY key") == before

    _export_reflects_the_review(out, tmp_path / "subset", keys, edited)

    # the same annotations through Label Studio's own JSON export file, into a fresh copy
    export = b"".join(ls.projects.exports.download_sync(id=project, export_type="JSON"))
    (tmp_path / "export.json").write_bytes(export)
    fresh = tmp_path / "fresh"
    shutil.copytree(built, fresh)
    report = (fresh / "report.html").read_text()
    assert "no reviews imported" in report
    res = run_main("review", "import", str(fresh), "--from-file", str(tmp_path / "export.json"))
    assert res.returncode == 0, res.stderr
    # the funnel ends with the reviewers' rejection, and the report is rewritten to show it
    funnel = _sql(fresh, "SELECT step, rejected, remaining FROM funnel ORDER BY position")
    (kept,) = _sql(fresh, "SELECT count(*) FROM samples WHERE status = 'kept'")[0]
    assert funnel[-1] == ("review", 1, kept) and funnel[-2][2] == kept + 1
    report = (fresh / "report.html").read_text()
    assert "no reviews imported" not in report and "3 reviewed: 2 accepted, 1 rejected" in report
    cols = "key, verdict, issues, captions, captions_edited, generated_captions"
    assert _sql(fresh, f"SELECT {cols} FROM reviews ORDER BY key") == _sql(
        out, f"SELECT {cols} FROM reviews ORDER BY key"
    )


def _export_reflects_the_review(
    out: Path, subset: Path, keys: list[str], edited: list[str]
) -> None:
    """``build-dataset export`` writes the reviewed corpus as a build of its own: the kept
    samples with the reviewer's text, the rejected one left out; real readers read it."""
    import webdataset as wds

    res = run_main("export", str(out), "--to", str(subset), "--samples-per-shard", "7")
    assert res.returncode == 0, res.stderr
    cols = "key, captions, qa, split, gsd_m, phash"
    kept = _sql(out, f"SELECT {cols} FROM samples WHERE status = 'kept' ORDER BY key")
    assert _sql(subset, f"SELECT {cols} FROM samples ORDER BY key") == kept
    assert keys[1] not in {k for k, *_ in kept}
    tars = sorted(str(p) for p in subset.glob("rev-*.tar"))
    assert len(tars) == (len(kept) + 6) // 7
    records = {
        s["__key__"]: json.loads(s["json"]) for s in wds.WebDataset(tars, shardshuffle=False)
    }
    assert sorted(records) == [k for k, *_ in kept]
    assert [c["text"] for c in records[keys[2]]["captions"]] == edited
    assert run_main("verify", str(subset)).returncode == 0
    gallery = min(24, len(kept))  # the subset has its own report, of its own samples
    assert (
        f"{gallery} kept samples drawn at random (seeded) of {len(kept):,}"
        in (subset / "report.html").read_text()
    )
    again = run_main("export", str(out), "--to", str(subset))
    assert again.returncode == 2 and "not empty" in again.stderr


def test_export_to_a_file_and_bad_input(
    built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    res = run_main("review", "export", str(built), "--sample", "4", "--to-file",
                   str(tmp_path / "tasks.json"), "--where", "gsd_m = 30")  # fmt: skip
    assert res.returncode == 0, res.stderr
    tasks = json.loads((tmp_path / "tasks.json").read_text())
    assert len(tasks) == 4 and all(t["data"]["key"].startswith("l7_30m") for t in tasks)
    assert '<TextArea name="captions"' in (tmp_path / "tasks.xml").read_text()
    for args, message in [
        (["export", str(built)], "set $LABEL_STUDIO_URL and $LABEL_STUDIO_API_KEY"),
        (["export", str(built), "--to-file", "x.json", "--where", "nope = 1"], "--where"),
        (["export", str(built), "--to-file", "x.json", "--where", "true); COPY samples TO ('x'"],
         "--where"),
        (["export", str(built), "--to-file", "x.json", "--stratify-by", "colour"], "colour"),
        (["export", str(tmp_path)], "no finished build"),
        (["import", str(built), "--from-file", str(tmp_path / "tasks.xml")], "not a Label Studio"),
    ]:  # fmt: skip
        res = run_main("review", *args)
        assert res.returncode == 2 and message in res.stderr, (args, res.stderr)
        assert "Traceback" not in res.stderr


def test_export_writes_one_shard_per_batch_of_the_manifest_and_refuses_bad_conditions(
    built: Path, tmp_path: Path
) -> None:
    """The subset streams from the manifest in key order, a shard's worth at a time: shard i
    holds the keys i*4 .. i*4+3 of the sorted subset, and the plan says so. A condition that
    matches nothing, or is not SQL, fails before the folder is made."""
    sub = tmp_path / "sub"
    res = run_main("export", str(built), "--where", "gsd_m = 30", "--to", str(sub),
                   "--samples-per-shard", "4")  # fmt: skip
    assert res.returncode == 0, res.stderr
    keys = [k for (k,) in _sql(built, "SELECT key FROM samples WHERE status = 'kept' AND "
                                      "gsd_m = 30 ORDER BY key")]  # fmt: skip
    assert len(keys) > 8
    got = _sql(sub, "SELECT key, shard FROM samples ORDER BY key")
    assert got == [(k, i // 4) for i, k in enumerate(keys)]
    plan = pq.read_table(sub / "plan.parquet", columns=["key", "shard"]).to_pylist()
    assert [(r["key"], r["shard"]) for r in plan] == got
    assert len(list(sub.glob("rev-*.tar"))) == -(-len(keys) // 4)
    assert not list(sub.glob("*.tmp-*")) and not list(sub.glob(".plan*"))
    assert run_main("verify", str(sub)).returncode == 0
    for where, needle in (("gsd_m = 999", "no kept sample"), ("nope = 1", "--where")):
        res = run_main("export", str(built), "--where", where, "--to", str(tmp_path / "none"))
        assert res.returncode == 2 and needle in res.stderr
        assert not (tmp_path / "none").exists()
