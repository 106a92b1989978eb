"""The README's "Loading the corpus" snippets, read from README.md (so they cannot drift from
what is tested) and run on the SF Bay example built with splits on, as the README says, in a
folder where ``out/sf-bay`` is that build."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from braceexpand import braceexpand

from geoweave.manifests.query import run_query
from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.integration
SECTION = "## Loading the corpus"
KINDS = {  # what marks each snippet
    "webdataset": ("import webdataset", "DataLoader"),
    "duckdb": ("import duckdb", "rows = con.sql("),
    "open_clip": ("open_clip_train.main", "--train-data"),
}


def snippets() -> dict[str, str]:
    """The section's fenced code blocks tested here, by what they do (a block of another
    kind, such as a `datasets` snippet tested elsewhere, is left out)."""
    text = (REPO / "README.md").read_text()
    start = text.index(f"\n{SECTION}\n")
    section = text[start : text.index("\n## ", start + len(SECTION) + 2)]
    found: dict[str, str] = {}
    for lang, code in re.findall(r"```(\w+)\n(.*?)```", section, re.DOTALL):
        kinds = [k for k, marks in KINDS.items() if all(m in code for m in marks)]
        assert len(kinds) <= 1 and not (set(kinds) & set(found)), f"ambiguous block: {code}"
        if kinds:
            found[kinds[0]] = code
            assert lang == ("bash" if kinds[0] == "open_clip" else "python")
    assert set(found) == set(KINDS)
    return found


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding ``out/sf-bay``: the example, built as the README's section says."""
    folder = tmp_path_factory.mktemp("loaders")
    command = re.search(r"`(build-dataset run examples/sf-bay\.yaml [^`]*)`", snippets_text())
    assert command, "the section names the build its snippets read"
    args = shlex.split(command.group(1))[1:]
    args[1] = str(REPO / args[1])
    res = run_cli(*args[:3], str(folder / "out/sf-bay"), *args[4:], "--no-progress")
    assert res.returncode == 0, res.stderr[-3000:]
    return folder


def snippets_text() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index(f"\n{SECTION}\n")
    return text[start : text.index("```", start)]


def _run(code: str, folder: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.chdir(folder)
    namespace: dict[str, Any] = {"__name__": "readme_snippet"}
    exec(compile(code, "README.md", "exec"), namespace)
    if "con" in namespace:  # DuckDB refuses a second, differently configured connection
        namespace["con"].close()
    return namespace


def _sidecar_rows(out: Path) -> list[dict[str, Any]]:
    return [r for p in sorted(out.glob("*.samples.parquet")) for r in pq.read_table(p).to_pylist()]


def test_webdataset_pipeline_yields_image_tensors_and_captions(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    ns = _run(snippets()["webdataset"], workdir, monkeypatch)
    images, captions = ns["images"], ns["captions"]
    assert isinstance(images, torch.Tensor) and images.dtype == torch.float32
    assert tuple(images.shape) == (16, 3, 24, 24) and 0 <= images.min() <= images.max() <= 1
    assert images.std() > 0.01  # real pixels, not a blank batch
    kept = {r["key"]: r for r in _sidecar_rows(workdir / "out/sf-bay") if r["status"] == "kept"}
    assert len(captions) == 16 and set(captions) <= {r["caption"] for r in kept.values()}
    assert sum(1 for _ in ns["dataset"]) == len(kept) == 136


def test_duckdb_query_selects_what_the_sidecars_say(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = _run(snippets()["duckdb"], workdir, monkeypatch)["rows"]

    def has(r: dict[str, Any], value: str) -> bool:
        return any(dict(e["tags"] or []).get("highway") == value for e in r["osm"] or [])

    expected = sorted(
        r["key"]
        for r in _sidecar_rows(workdir / "out/sf-bay")
        if r["status"] == "kept" and r["split"] == "test" and r["gsd_m"] <= 30
        and has(r, "residential") and has(r, "tertiary") and all(q["verified"] for q in r["qa"])
    )  # fmt: skip
    assert expected, "the example's condition selects some tiles"
    assert [key for key, _, _ in rows] == expected
    assert all(gsd <= 30 and caption for _, gsd, caption in rows)


def test_open_clip_command_names_exactly_the_shards_and_the_kept_count(workdir: Path) -> None:
    lines = snippets()["open_clip"].replace("\\\n", " ").splitlines()
    query = shlex.split(next(ln for ln in lines if ln.startswith("build-dataset query")))
    assert query[2] == "out/sf-bay"
    train = shlex.split(next(ln for ln in lines if "open_clip_train.main" in ln))
    flags = dict(zip(train[3::2], train[4::2], strict=False))
    assert train[:3] == ["python", "-m", "open_clip_train.main"]
    assert flags["--dataset-type"] == "webdataset"

    out = workdir / "out/sf-bay"
    pattern = flags["--train-data"]
    assert pattern.startswith("out/sf-bay/")
    expanded = sorted(workdir / p for p in braceexpand(pattern))
    assert expanded == sorted(out.glob("*.tar"))  # every shard, nothing that does not exist

    _, [(first, last, in_tars)] = run_query(out, query[3])  # what `build-dataset query` runs
    assert pattern.endswith(f"{{{first:06d}..{last:06d}}}.tar")
    kept = sum(r["status"] == "kept" for r in _sidecar_rows(out))
    _, rows = run_query(out, "SELECT count(*) FROM samples WHERE status = 'kept'")
    assert int(flags["--train-num-samples"]) == in_tars == kept == rows[0][0]
