"""``build-dataset publish``: the dry-run folder read by ``datasets`` (every config and split)
and by ``webdataset``, the card checked with ``huggingface_hub.DatasetCard`` and against the
manifest, and the upload through the real ``huggingface_hub`` client to a stand-in Hub on
127.0.0.1 (``tests/hub_server.py``), faults included.

The client runs in subprocesses: ``huggingface_hub`` reads ``HF_ENDPOINT`` and ``HF_HOME`` when
it is first imported, and another test may have imported it in this process already.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tests.conftest import REPO, SF_BAY, run_cli, run_main
from tests.hub_server import StandInHub

TOKEN = "hf_standin_0123456789abcdefSECRET"
REPO_ID = "geoweave-test/sf-bay"
LOAD = """
import json, sys, datasets
from huggingface_hub import DatasetCard
repo, cache = sys.argv[1], sys.argv[2]
DatasetCard.load(repo, repo_type="dataset").validate(repo_type="dataset")
out = {}
for config in ("default", "manifest"):
    for split, ds in datasets.load_dataset(repo, config, cache_dir=cache).items():
        out[f"{config}/{split}"] = sorted(ds["key"])
streamed = datasets.load_dataset(repo, split="train", streaming=True)  # HTTP range reads
out["streamed/train"] = sorted(row["key"] for row in streamed)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SF Bay example with splits (blocks of 3 km: train, val, test and buffer)."""
    out = tmp_path_factory.mktemp("publish") / "sf-bay"
    res = run_cli("run", str(REPO / "examples/sf-bay.yaml"), "--output", str(out),
                  "--no-progress", "--set", "splits.enabled=true", "--set", "splits.block_m=3000")  # fmt: skip
    assert res.returncode == 0, res.stderr
    return out


def kept_keys(out: Path) -> dict[str, list[str]]:
    """The manifest's kept keys per published split (no split: train)."""
    con = duckdb.connect(str(out / "manifest.duckdb"), read_only=True)
    try:
        rows = con.execute(
            "SELECT coalesce(split, 'train'), list(key ORDER BY key) FROM samples "
            "WHERE status = 'kept' GROUP BY 1"
        ).fetchall()
        planned = con.execute("SELECT list(key ORDER BY key) FROM samples").fetchone()
    finally:
        con.close()
    assert planned is not None
    return {f"default/{s}": keys for s, keys in rows} | {"manifest/samples": planned[0]}


def hub_env(hub: StandInHub, home: Path, token: str | None = TOKEN) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env |= {"HF_ENDPOINT": hub.url, "HF_HOME": str(home), "HF_HUB_DISABLE_XET": "1"}
    return env | ({"HF_TOKEN": token} if token else {})


def publish(env: dict[str, str], out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "geoweave.builders.cli", "publish", str(out), "--repo-id", REPO_ID]
    return subprocess.run([*cmd, *extra], capture_output=True, text=True, env=env, timeout=300)


def load_through(env: dict[str, str], cache: Path) -> dict[str, list[str]]:
    res = subprocess.run([sys.executable, "-c", LOAD, REPO_ID, str(cache)], capture_output=True,
                         text=True, env=env, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    return dict(json.loads(res.stdout.splitlines()[-1]))


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def test_dry_run_folder_loads_for_every_config_and_split(
    build: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datasets

    import geoweave.builders.publish as publish_module

    monkeypatch.setattr(publish_module, "MAX_FILE_BYTES", 20_000)  # several files per split
    monkeypatch.setattr(publish_module, "BATCH", 16)
    res = run_main("publish", str(build), "--repo-id", REPO_ID, "--dry-run")
    assert res.returncode == 0, res.stderr
    folder = Path(res.stdout.strip())
    assert folder == build / "_publish"
    assert len(list((folder / "data").glob("train-*.parquet"))) > 1
    expected = kept_keys(build)
    assert {k.split("/")[1] for k in expected if k.startswith("default/")} == {
        "train",
        "val",
        "test",
        "buffer",
    }
    got: dict[str, list[str]] = {}
    for config in ("default", "manifest"):
        loaded = datasets.load_dataset(str(folder), config, cache_dir=str(tmp_path))
        got |= {f"{config}/{s}": sorted(ds["key"]) for s, ds in loaded.items()}
    assert got == expected
    first = datasets.load_dataset(str(folder), split="train", cache_dir=str(tmp_path))[0]
    assert first["jpg"].size == (24, 24)
    assert json.loads(first["scores"])["faithfulness"] == 1.0
    assert not list(build.glob("_publish.tmp-*")), "the staging folder was renamed into place"


def test_webdataset_reads_the_tars_with_the_parquet_fields(build: Path) -> None:
    import webdataset as wds

    assert run_main("publish", str(build), "--repo-id", REPO_ID, "--dry-run").returncode == 0
    expected = kept_keys(build)
    for split in ("train", "val", "test", "buffer"):
        tars = sorted(str(p) for p in (build / "_publish/webdataset").glob(f"{split}-*.tar"))
        samples = list(
            wds.WebDataset(tars, shardshuffle=False, empty_check=False)
            .decode("pil")
            .to_tuple("__key__", "jpg", "json", "txt")
        )
        assert sorted(k for k, *_ in samples) == expected[f"default/{split}"]
        for key, image, meta, text in samples:
            assert meta["key"] == key and meta["split"] == split
            assert image.size == (24, 24) and text == meta["caption"]
            assert isinstance(meta["landcover"], str)  # maps as JSON text, as in the Parquet


def test_the_card_validates_and_shows_the_manifest_figures(build: Path) -> None:
    from huggingface_hub import DatasetCard

    assert run_main("publish", str(build), "--repo-id", REPO_ID, "--dry-run").returncode == 0
    first = digests(build / "_publish")
    text = (build / "_publish/README.md").read_text()
    card = DatasetCard(text)
    meta = card.data.to_dict()
    splits = {d["split"] for d in meta["configs"][0]["data_files"]}
    assert splits == {"train", "val", "test", "buffer"}
    assert meta["license"] == ["odbl", "other"] and meta["size_categories"] == ["n<1K"]
    con = duckdb.connect(str(build / "manifest.duckdb"), read_only=True)
    try:
        kept = con.execute("SELECT count(*) FROM samples WHERE status = 'kept'").fetchone()
        by_gsd = con.execute(
            "SELECT gsd_m, count(*) FROM samples WHERE status = 'kept' GROUP BY 1"
        ).fetchall()
        funnel = con.execute("SELECT step, rejected, remaining FROM funnel").fetchall()
        checksums = json.loads(con.execute("SELECT inputs FROM runs").fetchone()[0])  # type: ignore[index]
    finally:
        con.close()
    assert kept is not None and f"**{kept[0]:,} samples**" in text
    info = {c["config_name"]: c for c in meta["dataset_info"]}
    assert sum(s["num_examples"] for s in info["default"]["splits"]) == kept[0]
    for gsd, n in by_gsd:
        assert f"| {gsd:g} | {n:,} |" in text
    for step, rejected, remaining in funnel:
        assert f"| {step} | {rejected:,} | {remaining:,} |" in text
    assert all(c in text for c in checksums.values()) and "@misc{" in text
    # the recipe names its inputs by file name: no folder of the builder's machine
    assert str(SF_BAY) not in text and str(build) not in text and "/tmp/" not in text
    assert "sf_bay_landsat7_falsecolor_30m.tif" in text.split("```yaml")[1]
    assert run_main("publish", str(build), "--repo-id", REPO_ID, "--dry-run").returncode == 0
    assert digests(build / "_publish") == first, "the same manifest gives the same bytes"


def test_upload_through_the_stand_in_hub_loads_the_same_rows(build: Path, tmp_path: Path) -> None:
    with StandInHub(TOKEN) as hub:
        env = hub_env(hub, tmp_path / "hf")
        res = publish(env, build, "--private")
        assert res.returncode == 0, res.stderr
        assert f"to {hub.url}/datasets/{REPO_ID} at commit" in res.stdout
        repo = hub.state.repos[REPO_ID]
        assert repo.private
        assert {p: hashlib.sha256(f.data).hexdigest() for p, f in repo.files.items()} == digests(
            build / "_publish"
        )
        expected = kept_keys(build)
        loaded = load_through(env, tmp_path / "cache")
        assert loaded.pop("streamed/train") == expected["default/train"]
        assert loaded == expected
        assert hub.state.range_reads > 0, "streaming read the Parquet by byte ranges"
        repo.files["data/train-00099.parquet"] = repo.files["data/train-00000.parquet"]  # stale
        again = publish(env, build)
        assert again.returncode == 0, again.stderr
        assert sorted(repo.files) == sorted(digests(build / "_publish")), "stale file deleted"
        assert len(repo.commits) == 3
        puts = sum(1 for m, _ in hub.state.requests if m == "PUT")
        same = publish(env, build)
        assert same.returncode == 0, same.stderr
        assert len(repo.commits) == 3, "an unchanged build makes no empty commit"
        assert sum(1 for m, _ in hub.state.requests if m == "PUT") == puts
    logs = res.stdout + res.stderr + again.stdout + again.stderr + same.stderr
    assert TOKEN not in logs
    for p in build.rglob("*"):
        assert not p.is_file() or TOKEN.encode() not in p.read_bytes(), p


def test_a_failing_commit_is_one_clear_line_and_a_rerun_completes(
    build: Path, tmp_path: Path
) -> None:
    with StandInHub(TOKEN) as hub:
        env = hub_env(hub, tmp_path / "hf")
        hub.state.fail_commits = 1
        res = publish(env, build)
        assert res.returncode == 1
        assert "Traceback" not in res.stderr
        last = res.stderr.strip().splitlines()[-1]
        assert last.startswith(
            f"build-dataset: error: the upload to {REPO_ID} failed: HTTP 500 from POST"
        )
        assert "rerun" in last and not hub.state.repos[REPO_ID].files
        puts = _puts(hub.state.requests)
        res = publish(env, build)
        assert res.returncode == 0, res.stderr
        assert _puts(hub.state.requests) == puts, "uploaded files are not sent again"
        assert sorted(hub.state.repos[REPO_ID].files) == sorted(digests(build / "_publish"))


def test_an_interrupted_upload_says_so_and_a_rerun_completes(build: Path, tmp_path: Path) -> None:
    with StandInHub(TOKEN) as hub:
        env = hub_env(hub, tmp_path / "hf")
        hub.state.hold_puts = True
        cmd = [sys.executable, "-m", "geoweave.builders.cli", "publish", str(build),
               "--repo-id", REPO_ID]  # fmt: skip
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        assert hub.state.put_started.wait(120), "no upload started"
        proc.send_signal(signal.SIGINT)
        hub.state.release.set()
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 1
        assert "Traceback" not in err
        assert "interrupted before its commit" in err.strip().splitlines()[-1]
        assert not hub.state.repos[REPO_ID].files
        hub.state.hold_puts = False
        res = publish(env, build)
        assert res.returncode == 0, res.stderr
        files = hub.state.repos[REPO_ID].files
        assert sorted(files) == sorted(digests(build / "_publish"))
        puts = [p for m, p in hub.state.requests if m == "PUT"]
        assert len(puts) == len(set(puts)), "no file was sent twice"


def _puts(requests: list[tuple[str, str]]) -> int:
    return sum(1 for m, _ in requests if m == "PUT")


@pytest.mark.parametrize(
    ("args", "token", "needle"),
    [
        (["--repo-id", "no-slash"], TOKEN, "--repo-id 'no-slash': expected ORG/NAME"),
        (["--repo-id", REPO_ID], None, "no Hugging Face token: set HF_TOKEN"),
    ],
)
def test_bad_input_stops_before_any_work(
    build: Path, tmp_path: Path, args: list[str], token: str | None, needle: str
) -> None:
    with StandInHub(TOKEN) as hub:
        env = hub_env(hub, tmp_path / "hf", token)
        cmd = [sys.executable, "-m", "geoweave.builders.cli", "publish", str(build), *args]
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
        assert res.returncode == 2 and needle in res.stderr
        assert not hub.state.requests


def test_a_folder_without_a_build_is_refused(tmp_path: Path) -> None:
    res = run_main("publish", str(tmp_path), "--repo-id", REPO_ID, "--dry-run")
    assert res.returncode == 2 and "holds no finished build" in res.stderr


def test_the_readme_load_dataset_snippet_reads_the_test_split(
    build: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import re

    import datasets

    text = (REPO / "README.md").read_text()
    start = text.index("\n## Publishing on the Hugging Face Hub\n")
    section = text[start : text.index("\n## ", start + 10)]
    (code,) = [c for c in re.findall(r"```python\n(.*?)```", section, re.DOTALL)]
    assert run_main("publish", str(build), "--repo-id", REPO_ID, "--dry-run").returncode == 0
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path))
    scope: dict[str, Any] = {}
    exec(code.replace('"out/sf-bay', f'"{build}'), scope)
    keys = kept_keys(build)["default/test"]
    assert scope["test"].num_rows == len(keys) and scope["image"].size == (24, 24)
    con = duckdb.connect(str(build / "manifest.duckdb"), read_only=True)
    try:
        first = con.execute("SELECT caption FROM samples WHERE key = ?", [keys[0]]).fetchone()
    finally:
        con.close()
    assert first is not None and scope["caption"] == first[0]


def test_the_card_shows_review_statistics(build: Path, tmp_path: Path) -> None:
    """Reviews as `review import` leaves them (table reviews, view review_stats)."""
    import shutil

    from geoweave.manifests.card import card_text
    from geoweave.manifests.card_facts import card_facts
    from geoweave.manifests.reviews import REVIEW_ORIGIN, REVIEW_STATS

    shutil.copy(build / "manifest.duckdb", tmp_path / "manifest.duckdb")
    con = duckdb.connect(str(tmp_path / "manifest.duckdb"))
    con.execute(
        "CREATE TABLE reviews AS SELECT key, CASE WHEN row_number() OVER (ORDER BY key) <= 2 "
        "THEN 'reject' ELSE 'accept' END AS verdict FROM samples WHERE status = 'kept' LIMIT 6"
    )
    con.execute(REVIEW_ORIGIN)
    con.execute(REVIEW_STATS)
    con.close()
    facts = card_facts(tmp_path)
    assert facts["reviews"] == (6, 4, 2)
    text = card_text(facts, REPO_ID, [{"config_name": "default", "data_files": [
        {"split": "train", "path": "data/train-*.parquet"}]}], [], {"train": 1})  # fmt: skip
    assert "6 samples reviewed in Label Studio: 4 accepted, 2 rejected" in text
    assert "| captioner | template_v1 | 6 | 0.67 |" in text


def test_the_token_may_come_from_the_login_cache(build: Path, tmp_path: Path) -> None:
    """`hf auth login` stores it as HF_HOME/token; no HF_TOKEN set."""
    with StandInHub(TOKEN) as hub:
        home = tmp_path / "hf"
        home.mkdir()
        (home / "token").write_text(TOKEN)
        res = publish(hub_env(hub, home, token=None), build)
        assert res.returncode == 0, res.stderr
        assert sorted(hub.state.repos[REPO_ID].files) == sorted(digests(build / "_publish"))
        assert TOKEN not in res.stdout + res.stderr
