"""``build-dataset publish OUT --repo-id ORG/NAME [--private] [--dry-run]``.

The published folder is assembled from the manifest, not copied from the shards: a build's
shard files are not rewritten by the corpus passes or by reviews, so the kept samples of the
manifest (near-duplicates and reviewed rejections out, reviewed text in) are written again,
images byte for byte, as

```
README.md                       the dataset card (manifests/card.py), LICENSE.md
data/{split}-{i:05d}.parquet    config "default": metadata columns, jpg (an HF Image), tif
webdataset/{split}-{i:05d}.tar  the same samples as WebDataset: {key}.jpg, .json, .txt
manifest/samples.parquet        config "manifest": every planned tile, status and reason
manifest/{funnel,shards,runs,reviews}.parquet   the other manifest tables
```

The folder is written whole to ``OUT/_publish`` (a temporary folder renamed into place), and
the same manifest gives the same bytes, so a rerun of an interrupted upload sends only what
the Hub lacks. The upload itself is ``builders/hub.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from geoweave.builders.export import _as_meta
from geoweave.builders.outdir import OutputLock
from geoweave.builders.tar import TarShard
from geoweave.errors import FatalError
from geoweave.files import TMP_MARK, atomic_path, temp_name, write_text
from geoweave.manifests.card import card_text, licence_text
from geoweave.manifests.card_facts import KEPT, SPLIT, card_facts
from geoweave.manifests.manifest import finished_run
from geoweave.manifests.query import open_manifest
from geoweave.manifests.review_tasks import images
from geoweave.record import schema, to_table

PUBLISH_DIR = "_publish"
META_SCHEMA = schema(mapping=False)  # the Parquet shard's columns without the images
IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])  # datasets' Image storage
MAX_FILE_BYTES = 256 * 2**20  # image bytes per data file (the Hub suggests < 1 GB files)
BATCH = 512  # samples whose images are read at once
TABLES = ("funnel", "shards", "runs", "reviews")


def assemble(out_dir: Path, repo_id: str) -> Path:
    """Write the folder ``publish`` would upload to ``OUT/_publish``; returns its path."""
    name = str(finished_run(out_dir)["name"])
    facts = card_facts(out_dir)
    if not facts["kept"]:
        raise FatalError(f"{out_dir} has no kept sample: nothing to publish")
    final = out_dir / PUBLISH_DIR
    with OutputLock(out_dir):
        _remove_leftovers(out_dir)
        staging = temp_name(final)
        staging.mkdir()
        try:
            has_tif = _has_tif(out_dir)
            files = {
                s: _write_split(out_dir, staging, name, s, has_tif) for s, _ in facts["splits"]
            }
            _write_manifest_tables(out_dir, staging)
            configs, info = layout(staging, files, facts, has_tif)
            write_text(staging / "README.md", card_text(facts, repo_id, configs, info, files))
            write_text(staging / "LICENSE.md", licence_text(facts))
            _swap_in(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return final


def _remove_leftovers(out_dir: Path) -> None:
    for p in out_dir.glob(f"{PUBLISH_DIR}{TMP_MARK}*"):
        shutil.rmtree(p, ignore_errors=True)


def _swap_in(staging: Path, final: Path) -> None:
    """Replace ``final`` by ``staging``: the old folder is moved aside first (a folder cannot
    be renamed over a non-empty one), so ``final`` is always whole or absent."""
    old = temp_name(final) if final.exists() else None
    if old is not None:
        os.replace(final, old)
    os.replace(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _has_tif(out_dir: Path) -> bool:
    con = open_manifest(out_dir)
    try:
        planned = con.execute(
            "SELECT bool_or(recipe LIKE '%\"keep_bands\": true%') FROM runs"
        ).fetchone()
    finally:
        con.close()
    return bool(planned and planned[0])


def _write_split(out_dir: Path, staging: Path, name: str, split: str, has_tif: bool) -> int:
    """The split's kept samples as Parquet and tar files of at most ``MAX_FILE_BYTES`` of
    images each; returns how many files of each. Rows come by shard, so a batch's images are
    read from few shard files."""
    sql = f"SELECT * FROM samples WHERE {KEPT} AND {SPLIT} = ? ORDER BY shard, key"
    files, size, writer = 0, 0, None
    try:
        for batch in manifest_batches(out_dir, sql, [split]):
            if writer is None or size >= MAX_FILE_BYTES:
                if writer is not None:
                    writer.close()
                writer, size, files = _DataFile(staging, split, files, has_tif), 0, files + 1
            size += writer.write(out_dir, name, batch)
        assert writer is not None
        writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    return files


def manifest_batches(
    out_dir: Path, sql: str, params: list[Any] | None = None
) -> Iterator[list[dict[str, Any]]]:
    """The rows of a query on the (read-only) manifest, ``BATCH`` at a time, so a large build
    is never held in memory whole."""
    con = open_manifest(out_dir)
    try:
        cur = con.execute(sql, params or [])
        names = [d[0] for d in cur.description]
        while rows := cur.fetchmany(BATCH):
            yield [dict(zip(names, r, strict=True)) for r in rows]
    finally:
        con.close()


def parquet_schema(has_tif: bool) -> pa.Schema:
    """The published Parquet schema, with the ``datasets`` features in its metadata."""
    fields = [*META_SCHEMA, pa.field("jpg", IMAGE)]
    if has_tif:
        fields.append(pa.field("tif", pa.binary()))
    from geoweave.builders.hub import parquet_features

    meta = {"info": {"features": parquet_features(has_tif).to_dict()}}
    return pa.schema(fields, metadata={"huggingface": json.dumps(meta)})


class _DataFile:
    """One Parquet file and one tar of a split, written through temporary names."""

    def __init__(self, staging: Path, split: str, index: int, has_tif: bool) -> None:
        stem = f"{split}-{index:05d}"
        self.parquet = staging / "data" / f"{stem}.parquet"
        self.tar_path = staging / "webdataset" / f"{stem}.tar"
        self.schema, self.has_tif = parquet_schema(has_tif), has_tif
        self._stack = contextlib.ExitStack()
        self.parquet.parent.mkdir(exist_ok=True)
        self.tar_path.parent.mkdir(exist_ok=True)
        pq_tmp = self._stack.enter_context(atomic_path(self.parquet))
        tar_tmp = self._stack.enter_context(atomic_path(self.tar_path))
        self.writer = pq.ParquetWriter(pq_tmp, self.schema, compression="snappy")
        self.tar = TarShard(tar_tmp, mtime=0)  # fixed: the same build gives the same bytes

    def write(self, out_dir: Path, name: str, batch: list[dict[str, Any]]) -> int:
        """Append a batch of manifest rows; returns its image bytes."""
        pictures = images(out_dir, name, batch)
        metas = [_as_meta(r) for r in batch]
        missing = [m["key"] for m in metas if m["key"] not in pictures]
        if missing:
            raise FatalError(f"no image for {missing[0]} in {out_dir}: run `verify` on it")
        table = to_table(metas, META_SCHEMA)
        jpgs = [pictures[m["key"]][0] for m in metas]
        cols = [pa.array([{"bytes": j, "path": f"{m['key']}.jpg"} for j, m in zip(jpgs, metas, strict=True)], IMAGE)]  # fmt: skip
        if self.has_tif:
            cols.append(pa.array([pictures[m["key"]][1] for m in metas], pa.binary()))
        out = pa.Table.from_arrays([*table.columns, *cols], schema=self.schema)
        self.writer.write_table(out)
        for row, jpg in zip(table.to_pylist(), jpgs, strict=True):
            self._tar_sample(row, jpg, pictures[row["key"]][1])
        return sum(len(j) for j in jpgs)

    def _tar_sample(self, row: dict[str, Any], jpg: bytes, tif: bytes | None) -> None:
        key = row["key"]
        self.tar.add(f"{key}.jpg", jpg)
        self.tar.add(f"{key}.json", json.dumps(row, ensure_ascii=False).encode())
        self.tar.add(f"{key}.txt", (row["caption"] or "").encode())
        if self.has_tif and tif is not None:
            self.tar.add(f"{key}.tif", tif)

    def close(self) -> None:
        self.writer.close()
        self.tar.close()
        self._stack.close()  # renames both into place

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()
            self.tar.close()
        self._stack.__exit__(RuntimeError, RuntimeError("aborted"), None)  # deletes them


def _write_manifest_tables(out_dir: Path, staging: Path) -> None:
    """manifest/samples.parquet (every planned tile; maps as JSON text, as in the data files)
    and the other tables as DuckDB holds them."""
    folder = staging / "manifest"
    folder.mkdir()
    with atomic_path(folder / "samples.parquet") as tmp:
        writer = pq.ParquetWriter(tmp, META_SCHEMA)
        try:
            for batch in manifest_batches(out_dir, "SELECT * FROM samples ORDER BY key"):
                writer.write_table(to_table([_as_meta(r) for r in batch], META_SCHEMA))
        finally:
            writer.close()
    con = open_manifest(out_dir)
    try:
        present = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        tables = {t: con.execute(f"FROM {t}").to_arrow_table() for t in TABLES if t in present}
    finally:
        con.close()
    for t, table in tables.items():
        with atomic_path(folder / f"{t}.parquet") as tmp:
            pq.write_table(table, tmp)


def layout(
    staging: Path, files: dict[str, int], facts: dict[str, Any], has_tif: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The card's ``configs`` (the Parquet files of each split, and the manifest) and
    ``dataset_info`` (features, and each split's sample count, which ``datasets`` checks on
    load). The WebDataset tars are not a config: ``datasets`` infers one builder for a whole
    repository from its first config's files, so a tar config beside Parquet ones would not
    load; the card shows how to read them."""
    from geoweave.builders.hub import meta_features, parquet_features

    counts = dict(facts["splits"])
    splits = [{"name": s, "num_bytes": _bytes(staging, f"data/{s}-*.parquet"),
               "num_examples": counts[s]} for s in files]  # fmt: skip
    samples = {"name": "samples", "num_bytes": _bytes(staging, "manifest/samples.parquet"),
               "num_examples": facts["planned"]}  # fmt: skip
    configs: list[dict[str, Any]] = [
        {"config_name": "default", "default": True,
         "data_files": [{"split": s, "path": f"data/{s}-*.parquet"} for s in files]},
        {"config_name": "manifest",
         "data_files": [{"split": "samples", "path": "manifest/samples.parquet"}]},
    ]  # fmt: skip
    info: list[dict[str, Any]] = [
        {"config_name": "default", "features": parquet_features(has_tif)._to_yaml_list(),
         "splits": splits},
        {"config_name": "manifest", "features": meta_features()._to_yaml_list(),
         "splits": [samples]},
    ]  # fmt: skip
    return configs, info


def _bytes(staging: Path, pattern: str) -> int:
    return sum(p.stat().st_size for p in staging.glob(pattern))
