"""Shard writers: WebDataset tar, Parquet, the samples sidecar and the stats file.

Everything is written under a temporary name unique to this attempt and renamed when complete;
the stats file is renamed last and is the completion marker. An orphaned worker of a killed run
and a rerun may write the same shard at once: each renames its own finished files, and the
results are identical, so nothing is half-written or written twice.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from geoweave.builders.tar import WRITE_BUFFER, TarShard
from geoweave.files import crash_point, file_checksum, fsync_path, replace_durably, temp_name
from geoweave.record import PARQUET_SCHEMA, SIDECAR_SCHEMA, Sample, parquet_table, to_table
from geoweave.stats import COMPLETE, ShardStats


def shard_stem(name: str, shard: int) -> str:
    return f"{name}-{shard:06d}"


def stats_path(out_dir: Path, name: str, shard: int) -> Path:
    return out_dir / f"{shard_stem(name, shard)}.stats.json"


def complete_stats(out_dir: Path, name: str, shard: int, verify: bool = False) -> ShardStats | None:
    """The stats of a complete shard, or None. Complete: the stats file exists and every file
    it names has the recorded size, and the recorded checksum unless its mtime is the recorded
    one too (the fast path; ``verify`` checks every checksum). A copied corpus (new mtimes)
    costs one checksum pass, then is complete again."""
    path = stats_path(out_dir, name, shard)
    try:
        stats = ShardStats.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if stats.status != COMPLETE:
        return None
    for f, size in stats.files.items():
        if damage(out_dir / f, size, stats.checksums.get(f), stats.mtimes.get(f), verify):
            return None
    return stats


def damage(
    path: Path, size: int, checksum: str | None, mtime: int | None, verify: bool = True
) -> str | None:
    """Why a shard file does not hold what its stats recorded (None when it does)."""
    try:
        st = path.stat()
    except OSError:
        return "missing"
    if st.st_size != size:
        return f"size {st.st_size} bytes, recorded {size}"
    if checksum and (verify or st.st_mtime_ns != mtime) and file_checksum(path) != checksum:
        return "checksum mismatch (the content changed)"
    return None


def is_complete(out_dir: Path, name: str, shard: int, verify: bool = False) -> bool:
    return complete_stats(out_dir, name, shard, verify) is not None


def sidecar_path(out_dir: Path, name: str, shard: int) -> Path:
    return out_dir / f"{shard_stem(name, shard)}.samples.parquet"


def write_stats(out_dir: Path, name: str, stats: ShardStats, tag: str) -> None:
    """The completion marker (or failure record), renamed into place last."""
    path = stats_path(out_dir, name, stats.shard)
    tmp = temp_name(path, tag)
    tmp.write_text(stats.to_json())
    replace_durably(tmp, path)


IMAGE_COLUMNS = ("jpg", "tif")
# A sample's JSON in the tar: orjson (10x faster than json.dumps on a 2 KB record; UTF-8, not
# escaped; a NaN becomes null, so the file stays valid JSON); numpy scalars a plugin may leave
# in a record are written as numbers.
_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS

_POOL: tuple[int, ThreadPoolExecutor] | None = None


def _background() -> ThreadPoolExecutor:
    """This process's thread pool for checksums and fsyncs (made after any fork: a forked
    early worker must not inherit a pool whose threads it does not have)."""
    global _POOL
    if _POOL is None or _POOL[0] != os.getpid():
        _POOL = (os.getpid(), ThreadPoolExecutor(2, thread_name_prefix="shard-seal"))
    return _POOL[1]


def _seal(path: Path) -> str:
    """A written file's checksum, then its data on disk (both release the GIL)."""
    checksum = file_checksum(path)
    fsync_path(path)
    return checksum


def write_buffered(table: pa.Table, path: Path, **options: Any) -> None:
    """``pq.write_table`` through a 1 MiB buffer: one system call per MiB instead of one per
    page and footer part (about 260 for a sidecar of 256 rows)."""
    fs = pafs.LocalFileSystem()
    with fs.open_output_stream(str(path), buffer_size=WRITE_BUFFER) as out:
        pq.write_table(table, out, **options)


class ShardWriter:
    """Writes one shard; use as a context manager and call ``write`` once per sample."""

    def __init__(self, out_dir: Path, name: str, shard: int, formats: list[str]) -> None:
        self.out_dir, self.name, self.shard = out_dir, name, shard
        self.stem = shard_stem(name, shard)
        self.tag = f".tmp-{uuid.uuid4().hex[:8]}"
        self.formats = formats
        self.rows: list[dict[str, Any]] = []
        self.kept: list[bool] = []  # per row
        self.images: list[tuple[bytes | None, bytes | None]] = []  # per kept row, for Parquet
        self._sidecar: pa.Table | None = None
        self.tar: TarShard | None = None
        if "webdataset" in formats:
            self.tar = TarShard(self._tmp(".tar"))

    def _tmp(self, suffix: str) -> Path:
        return self.out_dir / f"{self.stem}{suffix}{self.tag}"

    def write(self, sample: Sample) -> None:
        self.write_row(sample.metadata(), sample.kept, sample.jpeg, sample.bands_tif)

    def write_row(
        self, meta: dict[str, Any], kept: bool, jpeg: bytes | None, tif: bytes | None
    ) -> None:
        """One sample as its metadata (``Sample.metadata()``) and image bytes."""
        self.rows.append(meta)
        self.kept.append(kept)
        if not kept:
            return
        if self.tar is not None:
            assert jpeg is not None
            key = meta["key"]
            self.tar.add(f"{key}.jpg", jpeg)
            self.tar.add(f"{key}.json", orjson.dumps(meta, option=_JSON_OPTIONS))
            self.tar.add(f"{key}.txt", (meta["caption"] or "").encode())
            if tif is not None:
                self.tar.add(f"{key}.tif", tif)
        if "parquet" in self.formats:
            self.images.append((jpeg, tif))

    def finish(
        self, stages: list[str], extra_stats: dict[str, Any], started: float | None = None
    ) -> ShardStats:
        """Close, rename into place, and write the stats marker; returns the stats.

        ``stages`` names the pipeline's stages and filters in order (the funnel's order).
        With ``started`` (the shard's ``time.time()`` at start), ``seconds`` is the shard's
        whole time, these writes included, and ``stage_seconds["write"]`` gets their share."""
        t = time.perf_counter()
        sealing = []  # each file's checksum and fsync run on a thread beside the next write
        for suffix, write in self._outputs():
            tmp = self._tmp(suffix)
            write(tmp)
            sealing.append((suffix, tmp, _background().submit(_seal, tmp)))
        stats = ShardStats.count(self.shard, self.rows, stages)
        # The rows and images are freed here, while the files are sealed, and in the shard's
        # own time: left to the writer's end they took 1.2 ms a shard of 256 rows after it.
        self.rows, self.kept, self.images, self._sidecar = [], [], [], None
        files, checksums, mtimes = {}, {}, {}
        for suffix, tmp, sealed in sealing:  # the stats marker, renamed last, syncs the folder
            final = self.out_dir / f"{self.stem}{suffix}"
            checksums[final.name] = sealed.result()
            os.replace(tmp, final)
            st = final.stat()
            files[final.name], mtimes[final.name] = st.st_size, st.st_mtime_ns
            crash_point("shard", self.shard)  # files renamed, the stats marker not yet
        stats.files, stats.bytes = files, sum(files.values())
        stats.checksums, stats.mtimes = checksums, mtimes
        for k, v in extra_stats.items():
            setattr(stats, k, v)
        if started is not None:
            stats.seconds = round(time.time() - started, 3)
            write_s = stats.stage_seconds.get("write", 0.0) + time.perf_counter() - t
            stats.stage_seconds = {**stats.stage_seconds, "write": round(write_s, 4)}
        write_stats(self.out_dir, self.name, stats, self.tag)
        return stats

    def _outputs(self) -> list[tuple[str, Callable[[Path], None]]]:
        """(suffix, write to a path) of each file of the shard, in the order they are written."""
        out: list[tuple[str, Callable[[Path], None]]] = []
        if self.tar is not None:
            tar = self.tar
            out.append((".tar", lambda _path: tar.close()))  # written as samples came
        if "parquet" in self.formats and self.images:  # readers choke on zero-row files
            out.append((".parquet", self._write_parquet))
        out.append((".samples.parquet", self._write_sidecar))
        return out

    def _write_parquet(self, path: Path) -> None:
        write_buffered(
            parquet_table(self._sidecar_table(), self.rows, self.kept, self.images),
            path,
            # JPEG and deflated GeoTIFF bytes neither compress nor repeat: spare the work
            compression={
                c: "NONE" if c in IMAGE_COLUMNS else "snappy" for c in PARQUET_SCHEMA.names
            },
            use_dictionary=[c for c in PARQUET_SCHEMA.names if c not in IMAGE_COLUMNS],
        )

    def _write_sidecar(self, path: Path) -> None:
        write_buffered(self._sidecar_table(), path)

    def _sidecar_table(self) -> pa.Table:
        """Every row's metadata as the sidecar's table (made once: the Parquet shard's table is
        its kept rows)."""
        if self._sidecar is None:
            self._sidecar = to_table(self.rows, SIDECAR_SCHEMA)
        return self._sidecar

    def abort(self) -> None:
        """Close and delete this attempt's files; never raises (it runs while an error, a full
        disk say, is on its way out)."""
        if self.tar is not None:
            with contextlib.suppress(OSError):
                self.tar.close()
        for p in self.out_dir.glob(f"{self.stem}*{self.tag}"):
            with contextlib.suppress(OSError):
                p.unlink(missing_ok=True)
