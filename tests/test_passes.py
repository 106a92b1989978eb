"""Corpus passes: an overlay table with a completion marker, rerun only when a shard changed."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from geoweave.builders.writers import ShardWriter
from geoweave.manifests.passes import PASSES_DIR, overlays, run_passes
from geoweave.record import Sample
from geoweave.tile import Tile


def _shard(out: Path, shard: int, n: int) -> None:
    w = ShardWriter(out, "ds", shard, ["parquet"])
    for i in range(n):
        s = Sample(
            Tile(f"img_10m_32610_{i}_{shard}", "img", "EPSG:32610", 10.0, 8, i, shard, shard)
        )
        s.reject("too_few_labels", by="min_labels_v1")
        w.write(s)
    w.finish(["plan", "min_labels_v1"], {})


def test_statistics_pass_reruns_only_when_a_shard_changed(tmp_path: Path) -> None:
    _shard(tmp_path, 0, 3)
    _shard(tmp_path, 1, 2)
    assert run_passes(tmp_path, "ds", [("statistics_v1", {})]) == ["statistics_v1"]
    table = pq.read_table(tmp_path / PASSES_DIR / "statistics_v1.parquet").to_pylist()
    assert table == [
        {"source": "img", "gsd_m": 10.0, "status": "rejected", "tiles": 5}
        | {"captions": 0, "qa_pairs": 0, "shards": 2}
    ]
    assert set(overlays(tmp_path)) == {"statistics_v1"}
    assert run_passes(tmp_path, "ds", [("statistics_v1", {})]) == []  # nothing changed
    _shard(tmp_path, 1, 4)  # a rewritten shard has new stats
    assert run_passes(tmp_path, "ds", [("statistics_v1", {})]) == ["statistics_v1"]
    table = pq.read_table(tmp_path / PASSES_DIR / "statistics_v1.parquet").to_pylist()
    assert table[0]["tiles"] == 7
    marker = json.loads((tmp_path / PASSES_DIR / "statistics_v1.json").read_text())
    assert marker["rows"] == 1


def test_a_pass_without_its_marker_is_not_an_overlay(tmp_path: Path) -> None:
    (tmp_path / PASSES_DIR).mkdir()
    (tmp_path / PASSES_DIR / "half_done.parquet").write_bytes(b"PAR1")
    assert overlays(tmp_path) == {}
