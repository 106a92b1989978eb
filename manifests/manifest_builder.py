"""Building ``manifest.duckdb`` under a temporary name: the sidecars loaded on a thread while
the shards run, the other tables (``manifest.write_tables``) at the end, then the rename."""

from __future__ import annotations

import logging
import os
import queue
import threading
import uuid
from pathlib import Path

import duckdb

from geoweave.files import crash_point, replace_durably
from geoweave.manifests.duck import connect
from geoweave.manifests.manifest import MANIFEST, write_tables
from geoweave.record import SIDECAR_SCHEMA

log = logging.getLogger("geoweave")

LOAD_BATCH = 16  # sidecars per INSERT
# The loader thread writes its rows to the database file (a checkpoint) once it has nothing
# queued and at least as many unwritten rows as are written in the current row group (one of
# DuckDB's row groups holds 122,880), and at least FIRST_CHECKPOINT_ROWS: 8,192, 16,384, 32,768,
# 65,536, then 122,880 per group. A checkpoint rewrites the growing row group, so doubling
# keeps the rewriting to about the group's size again (a checkpoint every 8,192 rows: 0.4-0.6
# CPU-seconds more over 36,864 rows, every 256: 6), and what is left for the end, on the
# build's critical path, is at most half a group: 36,864 rows of 128 px tiles left 4,096
# (0.04 s) instead of all of them (0.14-0.16 s).
CHECKPOINT_ROWS = 122_880
FIRST_CHECKPOINT_ROWS = 8_192
# DuckDB threads of the loader while the shards run: it shares the CPUs with the workers,
# and one thread loads the same rows in less CPU time (2.6 s against 4.6 with two, above).
LOADER_THREADS = 1
# Up to this many rows the corpus passes read the manifest's loaded copy (``pass_rows``): on
# 36,864 rows in 144 sidecars they took 0.3-0.5 s instead of 0.6-0.8. On 1.1M rows in 220
# sidecars both took 17 s, and the passes in the manifest's database peaked 190 MB higher
# (956 against 762 MB: its memory stays with the manifest), so above it they read the files.
PASS_ROWS = 250_000


def write_manifest(out_dir: Path, name: str) -> Path:
    """(Re)build ``manifest.duckdb`` from the sidecars, stats files, plan and run records."""
    return ManifestBuilder(out_dir, name).finish()


class ManifestBuilder:
    """Builds the manifest under a temporary name, optionally loading sidecars while the
    shards still run (``start``, then ``add`` for each complete shard's sidecar): on one worker
    the driver's CPU is idle, and reading the sidecars is most of the manifest's time.

    ``finish`` loads whatever sidecar on disk was not loaded yet; if a loaded one changed or
    vanished since (it cannot in one run, but the files are the truth), it reloads them all.
    The connection is opened on the loader thread, so ``start`` must follow any ``fork``."""

    def __init__(self, out_dir: Path, name: str) -> None:
        self.out_dir, self.name = out_dir, name
        self.tmp = out_dir / f"{MANIFEST}.tmp-{uuid.uuid4().hex[:8]}"
        self._con: duckdb.DuckDBPyConnection | None = None
        self._loaded: dict[str, tuple[int, int]] = {}  # sidecar -> (size, mtime_ns) at load
        self._queue: queue.Queue[Path | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._unwritten = 0  # rows loaded since the last checkpoint
        self.rows = 0  # rows loaded

    def start(self) -> None:
        self._thread = threading.Thread(target=self._load_loop, name="manifest", daemon=True)
        self._thread.start()

    def add(self, sidecar: Path) -> None:
        self._queue.put(sidecar)

    def _connect(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            self._con = connect(self.tmp)
            self._con.register("empty_samples", SIDECAR_SCHEMA.empty_table())
            self._con.execute("CREATE TABLE samples AS SELECT * FROM empty_samples")
            self._con.unregister("empty_samples")
        return self._con

    def _load_loop(self) -> None:
        """Load queued sidecars, several per statement when they arrive together, until the
        ``None`` that ``_stop`` sends."""
        try:
            self._connect().execute(f"SET threads = {LOADER_THREADS}")
            done = False
            while not done:
                batch = [self._queue.get()]
                while not self._queue.empty():
                    batch.append(self._queue.get())
                done = None in batch
                self._load([p for p in batch if p is not None])
                if not done and self._unwritten >= self._checkpoint_rows() and self._queue.empty():
                    self._connect().execute("CHECKPOINT")
                    self._unwritten = 0
        except BaseException as e:  # reported by finish, which then rebuilds from the files
            self._error = e

    def _checkpoint_rows(self) -> int:
        """Unwritten rows that make the loader write them (see ``CHECKPOINT_ROWS``)."""
        in_group = (self.rows - self._unwritten) % CHECKPOINT_ROWS
        return min(max(FIRST_CHECKPOINT_ROWS, in_group), CHECKPOINT_ROWS - in_group)

    def _load(self, sidecars: list[Path]) -> None:
        paths = [str(p) for p in sidecars if str(p) not in self._loaded]
        if not paths:
            return
        # By name: a sidecar written by an older geoweave (fewer columns) loads with nulls. A
        # few files per statement: one statement over thousands of files needs memory in
        # proportion (DuckDB's cap, manifests/duck.py, would refuse it).
        for at in range(0, len(paths), LOAD_BATCH):
            batch = paths[at : at + LOAD_BATCH]
            stamps = {p: _stamp(p) for p in batch}
            inserted = (
                self._connect()
                .execute(
                    "INSERT INTO samples BY NAME SELECT * FROM read_parquet(?, union_by_name = true)",
                    [batch],
                )
                .fetchone()
            )
            n = int(inserted[0]) if inserted else 0
            self._unwritten += n
            self.rows += n
            self._loaded.update(stamps)

    def _join(self) -> None:
        """Stop the loader thread once the queue is loaded; the connection gets back all
        its threads (the passes and the other tables run after the shards)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
            if self._con is not None and self._error is None:
                self._con.execute("RESET threads")

    def sidecar_rows(self) -> duckdb.DuckDBPyConnection:
        """The connection whose table ``samples`` holds every sidecar on disk, loaded now if
        it was not yet (the corpus passes read it: ``PassInput.rows``); the other tables are
        written by ``finish``."""
        self._join()
        if self._error is not None:  # the loader failed: start over from the files
            log.warning("reloading the manifest's sidecars: %s", self._error)
            self.abort()
        try:
            on_disk = sorted(str(p) for p in self.out_dir.glob(f"{self.name}-*.samples.parquet"))
            if any(_stamp(p) != self._loaded.get(p, _stamp(p)) for p in on_disk) or set(
                self._loaded
            ) - set(on_disk):
                self.abort()  # a loaded sidecar changed: reload everything
            self._load([Path(p) for p in on_disk])
            return self._connect()
        except BaseException:
            self.abort()
            raise

    def pass_rows(self) -> duckdb.DuckDBPyConnection | None:
        """What the corpus passes read (``PassInput.rows``): ``sidecar_rows()`` up to
        ``PASS_ROWS`` rows, else None (the sidecar files)."""
        con = self.sidecar_rows()
        return con if self.rows <= PASS_ROWS else None

    def finish(self) -> Path:
        """Load the remaining sidecars, write the other tables, rename into place."""
        con = self.sidecar_rows()
        try:
            write_tables(con, self.out_dir, self.name)
        except BaseException:
            self.abort()
            raise
        self._close()
        final = self.out_dir / MANIFEST
        crash_point("manifest")
        replace_durably(self.tmp, final)
        return final

    def _close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def abort(self) -> None:
        """Drop the half-built manifest (the next ``finish`` starts from nothing)."""
        self._join()
        self._close()
        self._loaded.clear()
        self._error = None
        self._unwritten = self.rows = 0
        self.tmp.unlink(missing_ok=True)
        self.tmp.with_name(self.tmp.name + ".wal").unlink(missing_ok=True)


def _stamp(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns
