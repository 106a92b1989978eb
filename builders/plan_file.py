"""The plan on disk: tiles written in pieces as they are planned, read back a shard at a time.

A continent's plan has tens of millions of tiles; it is never one Python list. The planner
appends tiles to a ``PlanWriter`` (one Parquet row group per ``group_rows`` tiles, a whole number
of shards, so a shard never straddles two groups) and gets a ``Plan``: the file, its counts and
the sha256 of its keys and shards (the plan's identity: a resume compares digests, not tiles).
``Plan.shard_tiles`` reads the one row group that holds a shard (the last one is cached).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
import weakref
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from geoweave.files import atomic_path
from geoweave.tile import Tile

DIGEST_KEY = b"geoweave_plan_sha256"
GROUP_TARGET = 65_536  # tiles per row group, rounded to whole shards
_TYPES = {"str": pa.string(), "float": pa.float64(), "int": pa.int64()}
SCHEMA = pa.schema([(f.name, _TYPES[str(f.type).split()[0]]) for f in fields(Tile)])
Count = tuple[str, float, str]  # (source, gsd, "planned" or the plan's reject reason)


def tiles_table(tiles: Sequence[Tile]) -> pa.Table:
    """Tiles as a table, one column per Tile field."""
    return pa.table(
        {f.name: pa.array([getattr(t, f.name) for t in tiles], f.type) for f in SCHEMA},
        schema=SCHEMA,
    )


def _tiles_of(table: pa.Table) -> list[Tile]:
    cols = [table.column(f.name).to_pylist() for f in SCHEMA]
    return [Tile(*row) for row in zip(*cols, strict=True)]


@dataclass
class Plan:
    """Tiles in shard order in a Parquet file; shard ``s`` holds tiles ``s * per_shard`` to
    ``(s + 1) * per_shard - 1``."""

    path: Path
    num_tiles: int
    num_shards: int
    per_shard: int
    group_rows: int
    digest: str
    counts: dict[Count, int]

    @property
    def outside(self) -> int:
        """Tiles the plan rejected already (no imagery)."""
        return sum(n for (_, _, state), n in self.counts.items() if state != "planned")

    def shard_tiles(self, shard: int) -> list[Tile]:
        start = shard * self.per_shard
        group = start // self.group_rows
        offset = start - group * self.group_rows
        return _tiles_of(_row_group(self.path, group).slice(offset, self.per_shard))

    def iter_tiles(self) -> Iterator[Tile]:
        """Every tile in shard order, a row group at a time."""
        f = pq.ParquetFile(self.path)
        for g in range(f.num_row_groups):
            yield from _tiles_of(f.read_row_group(g))

    def load_tiles(self) -> list[Tile]:
        """Every tile as a list: for small plans (tests, tools), never for a build."""
        return list(self.iter_tiles())

    def same_as(self, path: Path) -> bool:
        """Whether the plan file at ``path`` holds the same keys in the same shards."""
        old = pq.ParquetFile(path)
        digest = plan_digest(path)
        if old.metadata.num_rows != self.num_tiles:
            return False
        if digest is not None:
            return digest == self.digest
        # a plan written before plans had digests: compare the tiles themselves
        cols = ["key", "shard"]
        return bool(
            pq.read_table(path, columns=cols).equals(pq.read_table(self.path, columns=cols))
        )

    def use(self, path: Path) -> None:
        """Read from ``path`` from now on (a resume's plan file, equal to this one)."""
        if path != self.path:
            self.path.unlink(missing_ok=True)
        self.path = path


# The row group a process read last, with the identity of the file it came from: a worker's
# consecutive shards share a group (65,536 tiles), and each Ray task unpickles its own ``Plan``,
# so the group is kept here, not on the object (once per task it cost 15-50 ms).
_GROUP: tuple[tuple[int, str, int, int, int], pa.Table] | None = None
_GROUP_LOCK = threading.Lock()


def _row_group(path: Path, group: int) -> pa.Table:
    """Row group ``group`` of the plan file at ``path``, read once per process while the file
    stays the same (a rewrite, say with splits, is a new inode and mtime)."""
    global _GROUP
    st = path.stat()
    key = (os.getpid(), str(path), st.st_ino, st.st_mtime_ns, group)
    with _GROUP_LOCK:
        if _GROUP is None or _GROUP[0] != key:
            _GROUP = (key, pq.ParquetFile(path).read_row_group(group))
        return _GROUP[1]


def plan_digest(path: Path) -> str | None:
    """The digest a plan file carries (in the file's key-value metadata), None if it has none."""
    digest = (pq.ParquetFile(path).metadata.metadata or {}).get(DIGEST_KEY)
    return digest.decode() if digest is not None else None


class PlanWriter:
    """Appends tiles in shard order to a plan file; ``finish`` gives the ``Plan``."""

    def __init__(self, path: Path, per_shard: int, metadata: dict[bytes, bytes]) -> None:
        self.path, self.per_shard = path, per_shard
        self.group_rows = per_shard * max(1, GROUP_TARGET // per_shard)
        self._writer = pq.ParquetWriter(path, SCHEMA.with_metadata(metadata))
        self._pending: list[pa.Table] = []
        self._buffered = 0
        self._digest = hashlib.sha256()
        self.counts: Counter[Count] = Counter()
        self.num_tiles = 0

    def add(self, rows: pa.Table) -> None:
        """Append plan rows (``SCHEMA``), written a whole row group at a time."""
        per_state = rows.group_by(["source", "gsd_m", "plan_reject"]).aggregate([("key", "count")])
        for r in per_state.to_pylist():
            self.counts[(r["source"], r["gsd_m"], r["plan_reject"] or "planned")] += r["key_count"]
        self._pending.append(rows)
        self._buffered += rows.num_rows
        self.num_tiles += rows.num_rows
        while self._buffered >= self.group_rows:
            pending = pa.concat_tables(self._pending)
            self._flush(pending.slice(0, self.group_rows))
            rest = pending.slice(self.group_rows)
            self._pending, self._buffered = [rest], rest.num_rows

    def _flush(self, table: pa.Table) -> None:
        self._digest.update("\n".join(table.column("key").to_pylist()).encode() + b"\n")
        self._digest.update(np.asarray(table.column("shard"), dtype="<i8").tobytes())
        self._writer.write_table(table, row_group_size=self.group_rows)

    def finish(self) -> Plan:
        if self._buffered:
            self._flush(pa.concat_tables(self._pending))
            self._pending, self._buffered = [], 0
        digest = self._digest.hexdigest()
        self._writer.add_key_value_metadata({DIGEST_KEY: digest.encode()})
        self._writer.close()
        per = self.per_shard
        return Plan(self.path, self.num_tiles, (self.num_tiles + per - 1) // per, per,
                    self.group_rows, digest, dict(self.counts))  # fmt: skip

    def abort(self) -> None:
        self._writer.close()
        self.path.unlink(missing_ok=True)


def temp_plan_path(folder: Path | None = None) -> Path:
    """A fresh temporary plan file in a folder of its own (see ``remove_with``)."""
    return Path(tempfile.mkdtemp(prefix="geoweave-plan-", dir=folder)) / "plan.parquet"


def remove_with(plan: Plan, folder: Path) -> None:
    """Remove the plan's temporary folder when the plan is collected or the process ends."""
    weakref.finalize(plan, shutil.rmtree, folder, ignore_errors=True)


def set_splits(plan: Plan, splits: Iterable[pa.Array]) -> None:
    """Rewrite the plan file with each tile's split: one array per row group, in order."""
    src = pq.ParquetFile(plan.path)
    with atomic_path(plan.path) as tmp, pq.ParquetWriter(tmp, src.schema_arrow) as out:
        for g, column in zip(range(src.num_row_groups), splits, strict=True):
            table = src.read_row_group(g)
            i = table.schema.get_field_index("split")
            table = table.set_column(i, "split", column.cast(pa.string()))
            out.write_table(table, row_group_size=plan.group_rows)
        out.add_key_value_metadata({DIGEST_KEY: plan.digest.encode()})
