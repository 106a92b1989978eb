"""The splits' three scans over the tiles, one batch (a plan row group) at a time, so a plan of
any size is split in memory in proportion to its blocks, not its tiles.

1. ``census``: the blocks (sorted by grid coordinates), each stratum's blocks, the largest
   tile footprint and the grid CRS.
2. ``candidates``: after the blocks are dealt, the only tiles the buffer can touch: those
   within ``reach`` of a block of another split (``reach`` = buffer + the largest footprint,
   so a tile's centre block is within it of every tile near enough to buffer it). Their
   footprints are the only ones held, and the buffer runs over them alone, with the same
   result as over every tile: a tile farther than ``reach`` from every other split's block
   neither is buffered nor buffers another.
3. ``labels``: each batch's split labels from its blocks' splits and the buffered tiles.

Blocks are keyed by one integer, ``bx * 2**32 + by + 2**31``, which sorts as ``(bx, by)`` do and
turns a neighbour ``(bx + dx, by + dy)`` into ``key + dx * 2**32 + dy``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

Stratum = tuple[str, float]  # (imagery source, GSD)
Batches = Callable[[], Iterator[pa.Table]]  # each call yields the same tiles in the same order
COLUMNS = ["source", "crs", "gsd_m", "size_px", "col", "row", "plan_reject"]
_X, _Y0 = 2**32, 2**31
_MAX_OFFSETS = 64  # a tile spanning more neighbour blocks is a buffer candidate outright


@dataclass
class Footprints:
    """The live tiles of a batch: which rows, their bounds (grid CRS) and block keys."""

    live: np.ndarray
    bounds: np.ndarray
    keys: np.ndarray

    @classmethod
    def of(cls, table: pa.Table, block_m: float) -> Footprints:
        live = table.column("plan_reject").is_null().to_numpy(zero_copy_only=False)
        g = (table.column("gsd_m").to_numpy() * table.column("size_px").to_numpy())[live]
        col, row = table.column("col").to_numpy()[live], table.column("row").to_numpy()[live]
        bounds = np.column_stack([col * g, row * g, (col + 1) * g, (row + 1) * g])
        bx = np.floor((bounds[:, 0] + bounds[:, 2]) / 2 / block_m).astype(np.int64)
        by = np.floor((bounds[:, 1] + bounds[:, 3]) / 2 / block_m).astype(np.int64)
        return cls(live, bounds, bx * _X + by + _Y0)


@dataclass
class Census:
    keys: np.ndarray  # every block's key, sorted: a block's index is its place here
    strata: dict[Stratum, np.ndarray]  # stratum -> the indices of the blocks holding it
    ground_max: float
    crs: set[str]

    def index(self, keys: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.keys, keys)


def census(batches: Batches, block_m: float) -> Census:
    """Scan 1: the blocks, each stratum's blocks, the largest footprint, the grid CRSs."""
    per_stratum: dict[Stratum, list[np.ndarray]] = {}
    ground_max, crs = 0.0, set()
    for table in batches():
        ground = table.column("gsd_m").to_numpy() * table.column("size_px").to_numpy()
        ground_max = max(ground_max, float(ground.max(initial=0.0)))
        fp = Footprints.of(table, block_m)
        live = pa.array(fp.live)
        crs |= set(pc.unique(table.column("crs").filter(live)).to_pylist())
        kinds, codes = _strata(
            table.column("source").filter(live), table["gsd_m"].to_numpy()[fp.live]
        )
        for i, kind in enumerate(kinds):
            per_stratum.setdefault(kind, []).append(np.unique(fp.keys[codes == i]))
    found = [k for ks in per_stratum.values() for k in ks]
    keys = np.unique(np.concatenate(found)) if found else np.empty(0, np.int64)
    strata = {
        s: np.searchsorted(keys, np.unique(np.concatenate(ks))) for s, ks in per_stratum.items()
    }
    return Census(keys, dict(sorted(strata.items())), ground_max, crs)


def _strata(source: pa.ChunkedArray, gsd: np.ndarray) -> tuple[list[Stratum], np.ndarray]:
    """The batch's (source, GSD) kinds and each tile's kind, by integer codes throughout."""
    names = source.combine_chunks().dictionary_encode()
    src_code = names.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    gsds, gsd_code = np.unique(gsd, return_inverse=True)
    pairs, code = np.unique(src_code * len(gsds) + gsd_code.reshape(-1), return_inverse=True)
    kinds = [(names.dictionary[int(p) // len(gsds)].as_py(), float(gsds[p % len(gsds)]))
             for p in pairs]  # fmt: skip
    return kinds, code.reshape(-1)


@dataclass
class Candidates:
    index: np.ndarray  # the tiles' places among all rows (plan order)
    bounds: np.ndarray
    codes: np.ndarray  # their blocks' split codes


def candidates(
    batches: Batches, c: Census, block_split: np.ndarray, block_m: float, reach: float
) -> Candidates:
    """Scan 2: the live tiles within ``reach`` of a block of another split."""
    index, bounds, codes, at = [], [], [], 0
    for table in batches():
        fp = Footprints.of(table, block_m)
        own = block_split[c.index(fp.keys)]
        near = _near_other_split(fp.bounds, own, c, block_split, block_m, reach)
        index.append(np.flatnonzero(fp.live)[near] + at)
        bounds.append(fp.bounds[near])
        codes.append(own[near])
        at += table.num_rows
    if not index:
        return Candidates(np.empty(0, np.int64), np.empty((0, 4)), np.empty(0, np.int64))
    return Candidates(np.concatenate(index), np.concatenate(bounds), np.concatenate(codes))


def _near_other_split(
    bounds: np.ndarray, own: np.ndarray, c: Census, block_split: np.ndarray, block_m: float,
    reach: float,
) -> np.ndarray:  # fmt: skip
    """Whether a block of another split lies within ``reach`` of each footprint."""
    lo = np.floor((bounds[:, :2] - reach) / block_m).astype(np.int64)
    hi = np.floor((bounds[:, 2:] + reach) / block_m).astype(np.int64)
    span = hi - lo + 1
    out = span[:, 0] * span[:, 1] > _MAX_OFFSETS
    for dx in range(int(span[:, 0].max(initial=0))):
        for dy in range(int(span[:, 1].max(initial=0))):
            bx, by = lo[:, 0] + dx, lo[:, 1] + dy
            inside = (bx <= hi[:, 0]) & (by <= hi[:, 1]) & ~out
            keys = bx * _X + by + _Y0
            at = np.minimum(c.index(keys), len(c.keys) - 1)
            out |= inside & (c.keys[at] == keys) & (block_split[at] != own)
    return out


def labels(
    batches: Batches, c: Census, block_split: np.ndarray, buffered: np.ndarray, block_m: float,
    vocabulary: list[str],
) -> Iterator[pa.Array]:  # fmt: skip
    """Scan 3: each batch's split labels (null for a tile the plan rejected): a split code's
    place in ``vocabulary``, the buffer (code -1, and the ``buffered`` rows) its last."""
    words, at = pa.array(vocabulary), 0
    for table in batches():
        fp = Footprints.of(table, block_m)
        codes = block_split[c.index(fp.keys)]
        rows = np.flatnonzero(fp.live) + at
        codes = np.where((codes < 0) | np.isin(rows, buffered), len(vocabulary) - 1, codes)
        full = np.zeros(table.num_rows, dtype=np.int64)
        full[fp.live] = codes
        yield words.take(pa.array(full, mask=~fp.live))
        at += table.num_rows
