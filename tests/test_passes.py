"""Corpus passes: an overlay table with a completion marker, rerun only when a shard changed."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

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


def test_a_plugin_pass_from_the_recipe_lands_in_the_manifest(tmp_path: Path) -> None:
    import yaml

    from geoweave.builders.prepare import prepare
    from geoweave.builders.recipe import DEFAULT_PASSES
    from geoweave.builders.recipe_files import load_recipe
    from geoweave.builders.shard import run_shard
    from geoweave.manifests.manifest_builder import write_manifest
    from tests.conftest import REPO
    from tests.data.labels_fixture import write_cover
    from tests.data.raster_fixture import write_rgb

    recipe = {
        "name": "ps",
        "plugins": [str(REPO / "tests" / "data" / "plugins" / "caption_stats.py")],
        "imagery": [{"name": "img", "path": str(write_rgb(tmp_path / "s.tif", size=128))}],
        "labels": {"vector": [{"path": str(write_cover(tmp_path / "c.geojson", 1280))}]},
        "tiles": {"size_px": 32, "gsd_m": [10], "grid_crs": "EPSG:32610"},
        "passes": {"caption_words_test": {}},
        "output": {"samples_per_shard": 1000},
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    r = load_recipe(tmp_path / "r.yaml")
    defaults = list(DEFAULT_PASSES)
    assert list(r.passes) == [*defaults, "caption_words_test"]
    out = tmp_path / "out"
    ctx, plan, _ = prepare(r, out)
    out.mkdir()
    run_shard(ctx, 0, plan.shard_tiles(0))
    assert run_passes(out, "ps", list(r.passes.items())) == [*defaults, "caption_words_test"]
    write_manifest(out, "ps")
    con = duckdb.connect(str(out / "manifest.duckdb"), read_only=True)
    (gsd, samples, words) = con.execute("FROM caption_words_test").fetchone()
    kept = con.execute("SELECT count(*) FROM samples WHERE status = 'kept'").fetchone()[0]
    assert gsd == 10.0 and samples == kept > 0 and words > 3
    # Other options: the pass runs again, statistics_v1 (same shards, same options) does not.
    again = [("statistics_v1", {}), ("caption_words_test", {"status": "rejected"})]
    assert run_passes(out, "ps", again) == ["caption_words_test"]


def test_statistics_pass_cannot_be_turned_off(tmp_path: Path) -> None:
    import pytest

    from geoweave.builders.recipe_files import load_recipe
    from geoweave.errors import FatalError

    (tmp_path / "r.yaml").write_text(
        "name: t\nimagery: [{name: i, path: x.tif}]\npasses: {statistics_v1: false}\n"
    )
    with pytest.raises(FatalError, match=r"passes\.statistics_v1 cannot be turned off"):
        load_recipe(tmp_path / "r.yaml")


def _keys(out: Path) -> list[str]:
    con = duckdb.connect(str(out / "manifest.duckdb"), read_only=True)
    keys = [k for (k,) in con.execute("SELECT key FROM samples ORDER BY key").fetchall()]
    con.close()
    return keys


def test_manifest_loaded_during_the_build_matches_the_files(tmp_path: Path) -> None:
    """Sidecars added while shards run end up once each; one that changed after it was loaded,
    or one that fails to load, makes the builder reload from the files."""
    from geoweave.builders.writers import sidecar_path
    from geoweave.manifests.manifest_builder import ManifestBuilder, write_manifest

    _shard(tmp_path, 0, 3)
    _shard(tmp_path, 1, 2)
    builder = ManifestBuilder(tmp_path, "ds")
    builder.start()
    builder.add(sidecar_path(tmp_path, "ds", 0))
    builder.add(sidecar_path(tmp_path, "ds", 0))  # reported twice: loaded once
    builder.add(sidecar_path(tmp_path, "ds", 1))
    builder.finish()
    write_manifest(tmp_path, "ds")
    clean = _keys(tmp_path)
    assert len(clean) == 5
    assert _keys(tmp_path) == clean

    changed = ManifestBuilder(tmp_path, "ds")
    changed.start()
    changed.add(sidecar_path(tmp_path, "ds", 0))
    changed._join()  # loaded; now the shard is rewritten with 4 tiles
    _shard(tmp_path, 0, 4)
    changed.finish()
    assert len(_keys(tmp_path)) == 6

    broken = ManifestBuilder(tmp_path, "ds")
    (tmp_path / "not-a-sidecar.parquet").write_bytes(b"junk")
    broken.start()
    broken.add(tmp_path / "not-a-sidecar.parquet")
    broken.finish()
    assert len(_keys(tmp_path)) == 6
    assert not list(tmp_path.glob("*.tmp-*"))


def test_manifest_connections_are_capped_and_take_the_cap_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os

    from geoweave.manifests import duck

    def setting(con: duckdb.DuckDBPyConnection, name: str) -> str:
        return str(con.execute("SELECT current_setting(?)", [name]).fetchone()[0])

    unbounded = setting(duckdb.connect(), "memory_limit")
    monkeypatch.delenv(duck.MEMORY_ENV, raising=False)
    con = duck.connect()
    assert setting(con, "memory_limit").replace(" ", "") in ("244.1MiB", "256.0MB")
    assert setting(con, "memory_limit") != unbounded
    assert setting(con, "enable_external_file_cache").lower() == "false"  # no cached sidecars
    assert setting(con, "temp_directory").endswith(f"geoweave-duckdb-{os.getpid()}")
    monkeypatch.setenv(duck.MEMORY_ENV, "300MB")
    assert setting(duck.connect(), "memory_limit").replace(" ", "") in ("286.1MiB", "300.0MB")


@pytest.mark.parametrize(
    ("order", "reads"),
    [
        (["new", "new"], ["plain"]),  # every file complete: one plain read
        (["new", "old"], ["plain", "by name"]),  # the plain read fails on the old file
        (["old", "new"], ["by name"]),  # the first file lacks a column: by name at once
    ],
)
def test_sidecar_sql_reads_without_union_by_name_unless_an_older_sidecar_lacks_a_column(
    tmp_path: Path, order: list[str], reads: list[str]
) -> None:
    """``union_by_name`` holds every file's reader through the query (memory in proportion
    to the corpus), so passes read by the first file's columns; a sidecar of an older
    geoweave (no ``cell`` column) still reads, with nulls, first or last."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from geoweave.manifests import sidecar_sql
    from geoweave.record import SIDECAR_SCHEMA

    files = {"new": tmp_path / "new.parquet", "old": tmp_path / "old.parquet"}
    rows = [{"key": "a", "status": "kept", "cell": "c1"}]
    pq.write_table(pa.Table.from_pylist(rows, schema=SIDECAR_SCHEMA), files["new"])
    older = pa.Table.from_pylist([{"key": "b", "status": "kept"}], schema=SIDECAR_SCHEMA)
    pq.write_table(older.drop_columns(["cell"]), files["old"])

    class Recording:
        def __init__(self) -> None:
            self.con, self.sql = duckdb.connect(), list[str]()

        def execute(self, sql: str, params: list[object]) -> duckdb.DuckDBPyConnection:
            self.sql.append(sql)
            return self.con.execute(sql, params)

    con = Recording()
    paths = [str(files[name]) for name in order]
    query = f"SELECT key, cell FROM {sidecar_sql.UNION} ORDER BY key"
    got = sidecar_sql.execute(con, query, [paths], paths).fetchall()  # type: ignore[arg-type]
    want = [("a", "c1")] * 2 if "old" not in order else [("a", "c1"), ("b", None)]
    assert got == want
    assert ["by name" if sidecar_sql.UNION in s else "plain" for s in con.sql] == reads


def test_passes_over_the_manifests_loaded_rows_equal_passes_over_the_files(
    tmp_path: Path,
) -> None:
    """A build's passes read the rows its manifest loaded while the shards ran
    (``PassInput.rows``); every built-in pass gives the same overlay from them as from the
    sidecar files, on real image hashes with near duplicates and captions shared by many."""
    import pyarrow as pa

    import geoweave.builders.components  # noqa: F401  (registers the built-in passes)
    from geoweave.manifests.manifest_builder import ManifestBuilder
    from geoweave.protocols import PassInput
    from geoweave.record import SIDECAR_SCHEMA
    from geoweave.registry import CORPUS_PASSES
    from tests.conftest import SF_BAY
    from tests.data.dedup_fixture import rows

    data = rows(SF_BAY / "sf_bay_landsat7_falsecolor_30m.tif", families=30)
    for i, r in enumerate(data):
        text = "Satellite image of a park." if i % 3 else f"Tile {i} of a road."
        r |= {"shard": i % 2, "source": "img", "gsd_m": 10.0, "crs": "EPSG:32610",
              "transform": [10.0, 0, 500000.0 + 640 * (i // 5), 0, -10.0, 4e6],
              "captions": [{"text": text, "captioner": "template_v1"}],
              "status": "rejected" if i % 7 == 0 else "kept"}  # fmt: skip
    for shard in (0, 1):
        part = [{k: v for k, v in r.items() if k != "family"} for r in data if r["shard"] == shard]
        pq.write_table(
            pa.Table.from_pylist(part, schema=SIDECAR_SCHEMA),
            tmp_path / f"ds-{shard:06d}.samples.parquet",
        )
    sidecars = tuple(sorted(str(p) for p in tmp_path.glob("ds-*.samples.parquet")))
    names = ["statistics_v1", "near_duplicates_v1", "same_ground_v1", "shared_captions_v1"]
    names += ["change_v1"]
    from_files = {
        n: CORPUS_PASSES.build(n, {}).run(PassInput(tmp_path, "ds", sidecars)) for n in names
    }
    builder = ManifestBuilder(tmp_path, "ds")
    loaded = builder.sidecar_rows()
    for path in sidecars:  # the passes read the loaded rows, not the files
        Path(path).rename(path + ".away")
    from_rows = {
        n: CORPUS_PASSES.build(n, {}).run(PassInput(tmp_path, "ds", sidecars, loaded))
        for n in names
    }
    assert loaded.execute("SELECT count(*) FROM samples").fetchone() == (len(data),)  # untouched
    builder.abort()
    for n in names:
        assert from_rows[n].to_pylist() == from_files[n].to_pylist(), n
    assert from_files["near_duplicates_v1"].num_rows >= 12  # each family's variants
    assert from_files["shared_captions_v1"].num_rows > 50
    assert from_files["same_ground_v1"].num_rows > 0
    assert sum(r["tiles"] for r in from_files["statistics_v1"].to_pylist()) == len(data)


def test_the_manifest_loader_writes_loaded_rows_to_the_file_while_shards_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With nothing queued and as many unwritten rows as are written already (at least
    ``FIRST_CHECKPOINT_ROWS``), the loader thread checkpoints (the write-ahead log is emptied
    into the database file), so the build's finish has little left to write."""

    from geoweave.builders.writers import sidecar_path
    from geoweave.manifests import manifest_builder as manifest

    monkeypatch.setattr(manifest, "FIRST_CHECKPOINT_ROWS", 3)
    for shard, rows in enumerate([2, 3, 3, 2]):
        _shard(tmp_path, shard, rows)
    builder = manifest.ManifestBuilder(tmp_path, "ds")
    builder.start()
    wal = builder.tmp.with_name(builder.tmp.name + ".wal")
    deadline = time.time() + 10

    def add(shard: int, unwritten: int) -> None:
        builder.add(sidecar_path(tmp_path, "ds", shard))
        while (len(builder._loaded) <= shard or builder._unwritten != unwritten) and (
            time.time() < deadline
        ):
            time.sleep(0.01)
        assert builder._unwritten == unwritten
        assert (wal.exists() and wal.stat().st_size > 0) == (unwritten > 0)

    add(0, 2)  # 2 rows: below the first threshold
    add(1, 0)  # 5 >= 3: written
    add(2, 3)  # 3 < the 5 written
    add(3, 0)  # 5: written (10 in all)
    builder.finish()
    assert len(_keys(tmp_path)) == 10


def test_the_loader_checkpoints_double_up_to_a_row_group() -> None:
    from geoweave.manifests.manifest_builder import CHECKPOINT_ROWS, ManifestBuilder

    builder = ManifestBuilder(Path("/nonexistent"), "ds")
    seen = []
    for written in [0, 8_192, 16_384, 32_768, 65_536, CHECKPOINT_ROWS, CHECKPOINT_ROWS + 8_192]:
        builder.rows, builder._unwritten = written, 0
        seen.append(builder._checkpoint_rows())
    assert seen == [8_192, 8_192, 16_384, 32_768, 57_344, 8_192, 8_192]


def test_passes_read_the_manifests_rows_up_to_a_size_and_the_files_above(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``pass_rows``: the loaded copy for a corpus of up to ``PASS_ROWS`` rows, None (the
    files) above; either way every sidecar is loaded for the manifest."""
    from geoweave.manifests import manifest_builder

    _shard(tmp_path, 0, 3)
    _shard(tmp_path, 1, 2)
    builder = manifest_builder.ManifestBuilder(tmp_path, "ds")
    con = builder.pass_rows()
    assert con is not None and builder.rows == 5
    assert con.execute("SELECT count(*) FROM samples").fetchone() == (5,)
    monkeypatch.setattr(manifest_builder, "PASS_ROWS", 4)
    assert builder.pass_rows() is None and builder.rows == 5  # loaded once, not again
    builder.finish()
    assert len(_keys(tmp_path)) == 5


class _Probe:
    """A test pass that notes how many passes run at the same moment."""

    name = "probe"
    running = 0
    most = 0

    def __init__(self, _opts: object = None) -> None:
        pass

    def run(self, _inputs: object) -> pa.Table:
        with _LOCK:
            _Probe.running += 1
            _Probe.most = max(_Probe.most, _Probe.running)
        time.sleep(0.2)
        with _LOCK:
            _Probe.running -= 1
        return pa.table({"n": [threading.get_ident()]})


_LOCK = threading.Lock()


@pytest.mark.parametrize("loaded", [True, False])
def test_passes_run_at_once_over_the_loaded_rows_and_one_by_one_over_the_files(
    tmp_path: Path, loaded: bool
) -> None:
    """Over the manifest's loaded rows the passes share its database (and its memory cap) and
    run on threads at once; over the files each would have a cap of its own, so one at a time."""
    from geoweave.manifests.manifest_builder import ManifestBuilder
    from geoweave.registry import CORPUS_PASSES

    for name in ("probe_a_test", "probe_b_test", "probe_c_test"):
        if name not in CORPUS_PASSES.names():
            CORPUS_PASSES.add(name)(type(name, (_Probe,), {}))
    _shard(tmp_path, 0, 2)
    builder = ManifestBuilder(tmp_path, "ds")
    rows = builder.pass_rows() if loaded else None
    _Probe.most = 0
    names = ["probe_a_test", "probe_b_test", "probe_c_test"]
    assert run_passes(tmp_path, "ds", [(n, {}) for n in names], rows) == names
    assert _Probe.most == (3 if loaded else 1)
    assert all((tmp_path / PASSES_DIR / f"{n}.json").exists() for n in names)
    builder.abort()
