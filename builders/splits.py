"""Spatially disjoint train / val / test splits, assigned at plan time.

A random split of tiles leaks: neighbouring and overlapping tiles (the same ground at another
GSD or from another source) land in different splits, and a model is evaluated on ground it
was trained on (SkyScript's evaluation overlapped its training set). So splits are assigned by
ground, in three steps:

- **Blocks.** A tile's block is ``(floor(cx / block_m), floor(cy / block_m))`` of its footprint
  centre in the grid CRS, which every source and GSD of a build shares: all tiles over the same
  square of ground are in one block, whatever their source or GSD.
- **Allocation.** The blocks, sorted and shuffled by the recipe seed, are dealt to the splits.
  First, strata (one per imagery source and GSD), the one spanning the fewest blocks first,
  give each split that lacks them their first undealt block in shuffled order, in the order
  train, val, test. So every split gets every stratum that spans at least as many blocks as
  there are splits, unless blocks it shares with other strata were all dealt before (a warning
  names any stratum a split still lacks); a stratum spanning fewer blocks is logged with its
  block count and goes to train first, then val. Then the remaining blocks go, in shuffled
  order, to the split furthest below its target count (``fractions`` of all blocks, largest
  remainder), so the fractions hold by block count up to the blocks stratification took.
- **Buffer.** Splits have priority test > val > train. A tile within ``buffer_m`` (distance
  <= buffer_m, footprints in the grid CRS) of a tile of a higher-priority split gets the split
  ``buffer`` and belongs to no split. Afterwards any two tiles of different real splits are
  more than ``buffer_m`` apart, so they neither overlap nor touch. Buffer tiles are built as
  usual: select ``WHERE split = 'train'``.

The tiles are read in batches (a plan's row groups), three times over (``splits_scan``):
memory follows the number of blocks and of the tiles near another split, not all tiles.
The result is a pure function of the tiles, the ``splits`` section and the seed. Tiles the
plan already rejected (no imagery) get no split and take no part.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely

from geoweave.builders.plan_file import Plan, set_splits, tiles_table
from geoweave.builders.recipe import SPLIT_NAMES, SplitsConfig
from geoweave.builders.splits_scan import COLUMNS, Batches, Census, Stratum, candidates, census
from geoweave.builders.splits_scan import labels as split_labels
from geoweave.tile import Tile

log = logging.getLogger("geoweave")

BUFFER = "buffer"
_BUFFER = -1  # the buffer's code; a real split's code is its place in the priority order
PRIORITY = ("test", "val", "train")  # a tile near a tile of an earlier split is buffer
_DEAL_ORDER = tuple(SPLIT_NAMES)  # train, val, test: a rare stratum goes to train first
_UNDEALT = -1  # a block not dealt to a split yet


def assign_splits(tiles: Sequence[Tile], config: SplitsConfig, seed: int) -> list[str | None]:
    """The split of each tile (``train``, ``val``, ``test``, ``buffer``; None for a tile the
    plan rejected), as the module docstring says."""
    return table_splits(tiles_table(tiles), config, seed)


def table_splits(table: pa.Table, config: SplitsConfig, seed: int) -> list[str | None]:
    """``assign_splits`` of tiles given as plan columns (``COLUMNS`` at least)."""
    out: list[str | None] = []
    for batch in split_batches(lambda: iter([table]), config, seed):
        out.extend(batch.to_pylist())
    return out


def write_plan_splits(plan: Plan, config: SplitsConfig, seed: int) -> None:
    """Split a plan file's tiles and write the splits into it, one row group at a time: three
    scans of its columns (``splits_scan``), never every tile at once."""
    src = pq.ParquetFile(plan.path)

    def batches() -> Iterator[pa.Table]:
        return (src.read_row_group(g, columns=COLUMNS) for g in range(src.num_row_groups))

    set_splits(plan, split_batches(batches, config, seed))


def split_batches(batches: Batches, config: SplitsConfig, seed: int) -> Iterator[pa.Array]:
    """Each batch's split labels, as the module docstring says."""
    names = [n for n in PRIORITY if n in config.fractions]
    found = census(batches, config.block_m)
    if len(found.crs) > 1:
        raise ValueError("splits need one grid CRS for every tile")
    if not len(found.keys):
        yield from (pa.nulls(t.num_rows, pa.string()) for t in batches())
        return
    block_split = _deal(found, names, config, seed)
    buffer_m = config.buffer_m if config.buffer_m is not None else found.ground_max
    near = candidates(batches, found, block_split, config.block_m, buffer_m + found.ground_max)
    codes = _buffer(shapely.box(*near.bounds.T), near.codes, len(names), buffer_m)
    buffered = near.index[codes == _BUFFER]
    counts: Counter[str] = Counter()
    vocabulary = [*names, BUFFER]
    for batch in split_labels(batches, found, block_split, buffered, config.block_m, vocabulary):
        counts.update({str(v["values"]): int(v["counts"]) for v in batch.value_counts().to_pylist()
                       if v["values"] is not None})  # fmt: skip
        yield batch
    _log_summary(counts, block_split, names, config.block_m, buffer_m)


def _targets(names: list[str], fractions: dict[str, float], n: int) -> dict[str, int]:
    """Blocks per split: ``fraction * n`` rounded by largest remainder (summing to ``n``)."""
    raw = {s: fractions[s] * n for s in names}
    counts = {s: int(v) for s, v in raw.items()}
    by_remainder = sorted(names, key=lambda s: counts[s] - raw[s])  # largest remainder first
    for s in by_remainder[: n - sum(counts.values())]:
        counts[s] += 1
    return counts


def _deal(found: Census, names: list[str], config: SplitsConfig, seed: int) -> np.ndarray:
    """Each block's split code: stratified seeds first, then the rest by the fractions."""
    n_blocks = len(found.keys)
    order = list(range(n_blocks))
    random.Random(f"{seed}|splits").shuffle(order)
    rank = np.empty(n_blocks, dtype=np.int64)
    rank[order] = np.arange(n_blocks)
    carried = {  # stratum -> its blocks in shuffled order
        kind: blocks[np.argsort(rank[blocks], kind="stable")]
        for kind, blocks in found.strata.items()
    }
    split = np.full(n_blocks, _UNDEALT, dtype=np.int64)
    _seed_strata(carried, split, names, config.block_m)
    _fill(order, split, names, _targets(names, config.fractions, n_blocks))
    _warn_lacking(carried, split, names)
    return split


def _seed_strata(
    carried: dict[Stratum, np.ndarray], split: np.ndarray, names: list[str], block_m: float
) -> None:
    """Rarest stratum first, each split lacking it (train, val, test) takes its first
    undealt block."""
    for stratum, blocks in sorted(carried.items(), key=lambda kv: (len(kv[1]), kv[0])):
        if len(blocks) < len(names):
            log.warning(
                "splits: imagery %s at %g m spans %d block(s) of %g m, fewer than the %d "
                "splits, so not every split holds it (lower splits.block_m)",
                *stratum, len(blocks), block_m, len(names),
            )  # fmt: skip
        for name in (n for n in _DEAL_ORDER if n in names):
            held = split[blocks]
            free = blocks[held == _UNDEALT]
            if names.index(name) not in held and len(free):
                split[free[0]] = names.index(name)


def _fill(order: list[int], split: np.ndarray, names: list[str], targets: dict[str, int]) -> None:
    """Undealt blocks, in shuffled order, to the split furthest below its target."""
    counts = {s: int(np.sum(split == i)) for i, s in enumerate(names)}
    for b in order:
        if split[b] == _UNDEALT:
            name = max(names, key=lambda s: targets[s] - counts[s])
            split[b] = names.index(name)
            counts[name] += 1


def _warn_lacking(carried: dict[Stratum, np.ndarray], split: np.ndarray, names: list[str]) -> None:
    for (source, gsd), blocks in carried.items():
        missing = [n for i, n in enumerate(names) if i not in split[blocks]]
        if missing and len(blocks) >= len(names):
            log.warning(
                "splits: imagery %s at %g m spans %d blocks but none in %s (its blocks were "
                "taken by rarer strata first)",
                source, gsd, len(blocks), ", ".join(missing),
            )  # fmt: skip


def _buffer(boxes: np.ndarray, codes: np.ndarray, n_splits: int, buffer_m: float) -> np.ndarray:
    """Codes with every tile within ``buffer_m`` of a tile of a higher-priority split set to
    the buffer; one bulk STRtree query per split, against the splits above it as they end."""
    out = codes.copy()
    for level in range(1, n_splits):
        higher = np.flatnonzero((out >= 0) & (out < level))
        mine = np.flatnonzero(out == level)
        if not len(higher) or not len(mine):
            continue
        tree = shapely.STRtree(boxes[higher])
        near, _ = tree.query(boxes[mine], predicate="dwithin", distance=buffer_m)
        out[mine[np.unique(near)]] = _BUFFER
    return out


def _log_summary(
    counts: Counter[str], block_split: np.ndarray, names: list[str], block_m: float,
    buffer_m: float,
) -> None:  # fmt: skip
    parts = [
        f"{n} {counts[n]} tiles in {int(np.sum(block_split == i))} blocks"
        for i, n in enumerate(names)
    ]
    log.info(
        "splits (blocks of %g m, buffer %g m): %s; %d buffer tiles in no split",
        block_m, buffer_m, ", ".join(parts), counts[BUFFER],
    )  # fmt: skip
    for i, n in enumerate(names):
        if np.any(block_split == i) and not counts[n]:
            log.warning(
                "splits: the buffer (%g m) took every tile of %s: its blocks lie beside "
                "blocks of a higher-priority split; raise splits.block_m well above the "
                "buffer, or lower splits.buffer_m",
                buffer_m, n,
            )  # fmt: skip
