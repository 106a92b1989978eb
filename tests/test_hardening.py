"""Hardening: `query` cannot write or reach the network; label text is untrusted input."""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from geoweave.builders.prepare import prepare
from geoweave.builders.recipe import Recipe
from geoweave.builders.shard import run_shard
from geoweave.builders.writers import ShardWriter
from geoweave.errors import FatalError
from geoweave.manifests.manifest_builder import write_manifest
from geoweave.manifests.query import format_rows, open_manifest, run_query
from geoweave.record import Sample
from geoweave.text import MAX_LABEL_CHARS, clean_label, clean_tags, printable
from geoweave.tile import Tile
from tests.conftest import SF_BAY, run_main
from tests.data.dirty_osm import write_dirty_pbf


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A real manifest over two real (tiny) shards."""
    out = tmp_path / "out"
    out.mkdir()
    for shard in (0, 1):
        w = ShardWriter(out, "ds", shard, ["parquet"])
        for i in range(3):
            tile = Tile(f"img_10m_32610_{i}_{shard}", "img", "EPSG:32610", 10.0, 8, i, shard, shard)
            s = Sample(tile)
            s.reject("too_few_labels", by="min_labels_v1")
            w.write(s)
        w.finish(["plan", "min_labels_v1"], {})
    write_manifest(out, "ds")
    return out


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


WRITES = [
    "COPY (SELECT 'x') TO '{elsewhere}/evil.csv'",
    "COPY (SELECT 'x') TO '{out}/manifest.duckdb'",
    "COPY samples TO '{out}/copy.parquet' (FORMAT parquet)",
    "ATTACH '{out}/new.duckdb' AS n (READ_WRITE); CREATE TABLE n.t AS SELECT 1",
    "EXPORT DATABASE '{out}/exported'",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET enable_external_access = true",
    "CREATE TABLE t AS SELECT 1",
    "SELECT 1; COPY (SELECT 'x') TO '{out}/second.csv'",
    "EXPLAIN ANALYZE COPY (SELECT 1) TO '{out}/explained.csv'",
    "  -- a comment first\n  COPY (SELECT 1) TO '{out}/commented.csv'",
]


@pytest.mark.parametrize("sql", WRITES)
def test_query_refuses_every_statement_that_writes(corpus: Path, tmp_path: Path, sql: str) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    before = _digest(tmp_path)
    res = run_main("query", str(corpus), sql.format(out=corpus, elsewhere=elsewhere))
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "read-only SQL" in res.stderr and "Traceback" not in res.stderr
    assert _digest(tmp_path) == before  # nothing written, nothing changed


def test_query_cannot_reach_files_outside_the_corpus_or_the_network(
    corpus: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "secret.csv"
    outside.write_text("a\n1\n")
    for sql in (
        f"SELECT * FROM read_csv('{outside}')",
        f"SELECT * FROM read_csv('{corpus}/../secret.csv')",
        "SELECT * FROM read_parquet('https://example.com/x.parquet')",
        "SELECT * FROM glob('/etc/*')",
    ):
        res = run_main("query", str(corpus), sql)
        assert res.returncode == 2 and "query failed" in res.stderr, (sql, res.stderr)
        assert "Permission Error" in res.stderr


def test_query_reads_the_corpus_own_files_and_runs_several_queries(corpus: Path) -> None:
    cols, rows = run_query(
        corpus, f"SELECT count(*) FROM read_parquet('{corpus}/*.samples.parquet')"
    )
    assert rows == [(6,)]
    cols, rows = run_query(corpus, "SELECT 1; SELECT count(*) AS n FROM samples")
    assert cols == ["n"] and rows == [(6,)]
    for sql in ("DESCRIBE samples", "SHOW TABLES", "SUMMARIZE shards", "EXPLAIN SELECT 1"):
        assert run_query(corpus, sql)[1]


def test_the_locked_connection_refuses_writes_by_itself(corpus: Path, tmp_path: Path) -> None:
    """The second lock alone (DuckDB's settings), without the statement check."""
    con = open_manifest(corpus)
    with pytest.raises(duckdb.Error):
        con.execute(f"COPY (SELECT 1) TO '{tmp_path}/x.csv'")
    with pytest.raises(duckdb.Error):
        con.execute("SET enable_external_access = true")
    with pytest.raises(duckdb.Error):
        con.execute("INSERT INTO funnel VALUES (9, 'x', 0, 0)")
    con.close()
    assert not (tmp_path / "x.csv").exists()


def test_query_table_escapes_control_characters() -> None:
    import io

    buf = io.StringIO()
    format_rows(["v"], [("a\x1b[31mb\nc\u202ed",)], "table", buf)
    text = buf.getvalue()
    assert "\x1b" not in text and "\u202e" not in text
    assert "a\\x1b[31mb\\nc\\u202ed" in text


def test_query_rows_go_to_the_stdout_of_the_time_of_the_call(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Not to the ``sys.stdout`` of import time (a default argument would bind that one)."""
    format_rows(["v", "w"], [("x", 1)], "csv")
    assert capsys.readouterr().out.splitlines() == ["v,w", "x,1"]


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("park", "park"),
        ("  two   words \t", "two words"),
        ("line\nbreak\r\n", "line break"),
        ("\x1b[1;31mred\x1b[0m", "red"),
        ("\x1b]0;title\x07name", "name"),
        ("abc\u202edef\u2066x\u2069", "abcdefx"),
        ("zero\u200bwidth\ufeff", "zerowidth"),
        ("e\u0301cole", "\u00e9cole"),  # NFC
        ("<script>alert(1)</script>", "<script>alert(1)</script>"),  # kept: escaped where shown
        ("\x00\x07\x08", ""),
        (42, "42"),
    ],
)
def test_clean_label(raw: object, clean: str) -> None:
    assert clean_label(raw) == clean


def test_clean_label_caps_the_length_and_tags_drop_empty_entries() -> None:
    long = clean_label("y" * 1000)
    assert len(long) == MAX_LABEL_CHARS and long.endswith("…")
    tags = {"building": "yes", "name": "\n\x1b[0m", "k\ney": "v"}
    assert clean_tags(tags) == {"building": "yes", "k ey": "v"}
    same = {"building": "yes"}
    assert clean_tags(same) is same  # clean already: no copy
    # an empty key or value is dropped even when every string is clean already
    assert clean_tags({"building": "", "landuse": "grass", "": "x"}) == {"landuse": "grass"}
    assert printable("ok") == "ok" and printable("a\tb") == "a\\tb"


def test_hostile_osm_text_is_cleaned_before_captions_and_records(tmp_path: Path) -> None:
    """A real PBF with newlines, ANSI and bidi overrides in its tags, through a real shard."""
    pbf = tmp_path / "dirty.osm.pbf"
    expected = write_dirty_pbf(pbf)
    recipe = Recipe.model_validate(
        {
            "name": "dirty",
            "area": {"bbox": (-122.3100, 37.8060, -122.2850, 37.8200)},
            "imagery": [
                {"name": "l7", "path": str(SF_BAY / "sf_bay_landsat7_falsecolor_30m.tif")}
                | {"scale": "none"}
            ],
            "tiles": {"size_px": 16, "gsd_m": [30]},
            "labels": {"osm": [str(pbf)], "min_pixels": 1, "tag_keys": ["building", "name"]},
            "filters": {"min_labels_v1": {"min_labels": 0}, "nodata_v1": {"max_fraction": 1.0}},
            "output": {"dir": str(tmp_path / "out"), "samples_per_shard": 1000},
        }
    )
    out = tmp_path / "out"
    ctx, plan, _ = prepare(recipe, out)
    out.mkdir()
    run_shard(ctx, 0, plan.shard_tiles(0))
    rows = pq.read_table(out / "dirty-000000.samples.parquet").to_pylist()
    seen = {v for r in rows for e in r["osm"] for k, v in e["tags"] if k == "building"}
    assert seen == set(expected.values())  # every building seen, each value cleaned
    names = {v for r in rows for e in r["osm"] for k, v in e["tags"] if k == "name"}
    assert names and all(n.startswith("Name ") and n.isprintable() for n in names)
    with tarfile.open(out / "dirty-000000.tar") as tf:
        members = {m.name: tf.extractfile(m).read() for m in tf.getmembers()}  # type: ignore[union-attr]
    captions = [v.decode() for k, v in members.items() if k.endswith(".txt")]
    assert any("ware house building" in t for t in captions), captions
    for text in captions:
        assert text.isprintable(), text
    for r in rows:
        for c in r["captions"]:
            assert c["text"].isprintable(), c["text"]
    for k, v in members.items():
        if k.endswith(".json"):
            assert "\\u001b" not in v.decode() and "\\u202e" not in v.decode()


def test_osm_tag_over_osmium_limit_is_a_clear_error(tmp_path: Path) -> None:
    from xml.sax.saxutils import quoteattr

    from geoweave.sources.osm import build_osm_index

    osm = tmp_path / "long.osm"
    value = quoteattr("x" * 1100)
    osm.write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n<osm version="0.6">\n'
        f'  <node id="1" version="1" lat="37.8" lon="-122.3"><tag k="name" v={value}/>'
        '<tag k="amenity" v="cafe"/></node>\n</osm>\n'
    )
    with pytest.raises(FatalError, match=r"long\.osm: OSM tag value is too long"):
        build_osm_index(osm, tmp_path / "cache", ["amenity", "name"])


def test_plain_error_has_no_colour_codes_or_traceback_frames() -> None:
    from geoweave.text import plain_error

    class TaskError(Exception):  # how Ray wraps a task's exception: colours, frames, a cause
        def __init__(self, cause: BaseException) -> None:
            super().__init__(
                "\x1b[36mray::task()\x1b[39m (pid=1)\nTraceback (most recent call last):\n"
                '  File "/usr/lib/python3.11/x.py", line 3, in f\nOSError: disk'
            )
            self.cause = cause

    assert plain_error(TaskError(OSError(28, "No space left on device"))) == (
        "OSError: [Errno 28] No space left on device"
    )
    wrapped = plain_error(RuntimeError('\x1b[31mred\x1b[0m\n  File "/a.py", line 1\nboom'))
    assert wrapped == "RuntimeError: red | boom"
    assert plain_error(ValueError()) == "ValueError"


def test_batch_cleaning_equals_cleaning_each_label() -> None:
    """``clean_labels`` and ``clean_tags_batch`` take a fast path for a batch that is clean
    already; on every batch they return what the per-label functions return."""
    import itertools
    import random

    from geoweave.text import clean_labels, clean_tags_batch

    pieces = ["yes", "a b", " lead", "trail ", "x|y", "| y", "x |", "a  b", "", "é", "e\u0301",
              "\x1b[31mred", "rtl\u202e", "line\nbreak", "z" * 300, "Café"]  # fmt: skip
    rng = random.Random(4)
    for n in (0, 1, 2, 5):
        for batch in itertools.islice(itertools.product(pieces, repeat=n), 400):
            values = list(batch) + [rng.randint(0, 9)] * (rng.random() < 0.1)
            assert clean_labels(values) == [clean_label(v) for v in values]
            tags = [{k: v for k, v in zip(values[::2], values[1::2], strict=False)}]
            tags.append({"building": "yes", "name": values[0] if values else "x"})
            assert clean_tags_batch(tags) == [clean_tags(t) for t in tags]
    clean = ["n1", "w2", "Main Street"]
    assert clean_labels(clean) is clean  # the fast path hands the batch back, no copy
    good = [{"highway": "primary", "name": "Main Street"}]
    assert clean_tags_batch(good) is good
