"""Batched reads: a shard's tiles as a few blocks of the tile lattice, each read once.

The cells of one grid at one GSD tile a lattice (cell (col, row) spans col*g..(col+1)*g, with
g = gsd * size), so a patch of tiles is one destination raster. Reading and warping a block once
and slicing tiles out of it replaces a window read and two GDAL warps per tile (STYLE.md 15).
A block read that fails (a damaged COG block) is retried tile by tile, so only the tiles over
the damage come back as errors.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from affine import Affine
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import RasterioError
from rasterio.io import DatasetReader
from rasterio.warp import reproject
from rasterio.windows import Window

from geoweave.tile import BBox, Tile, transform_bbox

T = TypeVar("T")
MAX_BLOCK_PX = 4096  # destination (and source) pixels on a block side: ~50 MB of uint8 RGB
MARGIN_PX = 2  # source pixels read around a block, so resampling kernels see their neighbours


@dataclass(frozen=True, slots=True)
class Block:
    """A rectangle of lattice cells holding some of a batch's tiles (``index`` into the batch)."""

    crs: str
    gsd_m: float
    size_px: int
    col0: int
    row0: int
    ncols: int
    nrows: int
    index: tuple[int, ...]
    tiles: tuple[Tile, ...]

    @property
    def shape(self) -> tuple[int, int]:
        return self.nrows * self.size_px, self.ncols * self.size_px

    @property
    def bounds(self) -> BBox:
        g = self.gsd_m * self.size_px
        return (
            self.col0 * g,
            self.row0 * g,
            (self.col0 + self.ncols) * g,
            (self.row0 + self.nrows) * g,
        )

    @property
    def transform(self) -> Affine:
        minx, _, _, maxy = self.bounds
        return Affine(self.gsd_m, 0.0, minx, 0.0, -self.gsd_m, maxy)

    def offset(self, tile: Tile) -> tuple[int, int]:
        """(row, col) pixel offset of a tile in the block array (rows grow southwards)."""
        s = self.size_px
        return (self.row0 + self.nrows - 1 - tile.row) * s, (tile.col - self.col0) * s

    def slices(self, tile: Tile) -> tuple[slice, slice]:
        """The (rows, cols) of a tile in the block array."""
        y, x = self.offset(tile)
        return slice(y, y + self.size_px), slice(x, x + self.size_px)

    def tile_ids(self) -> np.ndarray:
        """(H, W) int: the position in ``tiles`` of the tile under each pixel, -1 for none."""
        cells = np.full((self.nrows, self.ncols), -1, dtype=np.int64)
        for i, t in enumerate(self.tiles):
            cells[self.row0 + self.nrows - 1 - t.row, t.col - self.col0] = i
        return np.repeat(np.repeat(cells, self.size_px, axis=0), self.size_px, axis=1)


def _block(key: tuple[str, float, int], members: list[tuple[int, Tile]]) -> Block:
    cols = [t.col for _, t in members]
    rows = [t.row for _, t in members]
    c0, r0 = min(cols), min(rows)
    return Block(
        *key, c0, r0, max(cols) - c0 + 1, max(rows) - r0 + 1,
        tuple(i for i, _ in members), tuple(t for _, t in members),
    )  # fmt: skip


def blocks_of(tiles: Sequence[Tile], src_res_m: float, max_px: int | None = None) -> list[Block]:
    """Split a batch into lattice blocks with at most ``max_px`` px a side, in the tile grid and
    in the source (a 10 m source under 60 m tiles reads 6x the tile pixels)."""
    max_px = max_px or MAX_BLOCK_PX
    groups: dict[tuple[str, float, int], list[tuple[int, Tile]]] = defaultdict(list)
    for i, t in enumerate(tiles):
        groups[(t.crs, t.gsd_m, t.size_px)].append((i, t))
    blocks = []
    for (crs, gsd, size), members in groups.items():
        src_px = size * max(1.0, gsd / src_res_m) if src_res_m > 0 else size
        k = max(1, int(max_px // max(size, src_px)))
        c0 = min(t.col for _, t in members)
        r0 = min(t.row for _, t in members)
        cells: dict[tuple[int, int], list[tuple[int, Tile]]] = defaultdict(list)
        for i, t in members:
            cells[((t.col - c0) // k, (t.row - r0) // k)].append((i, t))
        blocks += [_block((crs, gsd, size), m) for m in cells.values()]
    return blocks


def source_window(
    bounds: BBox, crs: str, src_crs: str, src_transform: Affine, width: int, height: int
) -> Window | None:
    """The source window under ``bounds`` (in ``crs``) plus a margin; None when disjoint.

    Inverts the source transform at the corners, so rotated rasters work too.
    """
    w, s, e, n = transform_bbox(bounds, crs, src_crs)
    inv = ~src_transform
    cols, rows = zip(*(inv * (x, y) for x in (w, e) for y in (s, n)), strict=True)
    col0 = max(math.floor(min(cols)) - MARGIN_PX, 0)
    row0 = max(math.floor(min(rows)) - MARGIN_PX, 0)
    col1 = min(math.ceil(max(cols)) + MARGIN_PX, width)
    row1 = min(math.ceil(max(rows)) + MARGIN_PX, height)
    if col0 >= col1 or row0 >= row1:
        return None
    return Window(col0, row0, col1 - col0, row1 - row0)


def aligned_window(block: Block, src_crs: str, src_transform: Affine) -> Window | None:
    """The source pixels of the block when its grid is the source's own (same CRS, pixel size
    and pixel edges), so a plain read replaces the warp; else None. May reach past the raster."""
    t = src_transform
    g = block.gsd_m
    if src_crs != block.crs or t.b != 0 or t.d != 0:
        return None
    if not (math.isclose(t.a, g, rel_tol=1e-9) and math.isclose(-t.e, g, rel_tol=1e-9)):
        return None
    minx, _, _, maxy = block.bounds
    col, row = (minx - t.c) / g, (t.f - maxy) / g
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return None
    h, w = block.shape
    return Window(round(col), round(row), w, h)


def clip(win: Window, width: int, height: int) -> tuple[Window, slice, slice] | None:
    """The part of ``win`` inside a ``width`` x ``height`` raster, and where it lies in ``win``."""
    c0, r0 = max(int(win.col_off), 0), max(int(win.row_off), 0)
    c1 = min(int(win.col_off + win.width), width)
    r1 = min(int(win.row_off + win.height), height)
    if c0 >= c1 or r0 >= r1:
        return None
    y, x = r0 - int(win.row_off), c0 - int(win.col_off)
    return Window(c0, r0, c1 - c0, r1 - r0), slice(y, y + r1 - r0), slice(x, x + c1 - c0)


def resampling(gsd_m: float, res_m: float) -> Resampling:
    """Average when a tile pixel spans more than 1.5 source pixels, else bilinear."""
    return Resampling.average if gsd_m > res_m * 1.5 else Resampling.bilinear


def _scale_options(gsd_m: float, res_m: float) -> dict[str, float]:
    """GDAL's XSCALE/YSCALE (tile pixels per source pixel) when the tile is clearly coarser.

    GDAL otherwise estimates the scale, which sets the width of the antialiasing bilinear
    kernel, per warp chunk from the chunk's (raster-clipped) source window, so a block can get
    another estimate than its tiles do. On the SF Bay sample a per-tile warp behaves as
    XSCALE=0.79 (its ground ratio); fixing it brings the block warp closer (not equal).
    """
    scale = res_m / gsd_m
    return {"XSCALE": scale, "YSCALE": scale} if scale < 0.95 else {}


def window_mask(
    ds: DatasetReader, win: Window, src: np.ndarray, nodata: float | None
) -> tuple[float | None, np.ndarray]:
    """(nodata value for the warp, uint8 mask 0/255) of a window: the file's, or the recipe's."""
    if nodata is None:
        if all(MaskFlags.all_valid in f for f in ds.mask_flag_enums):
            return None, np.full(src.shape[1:], 255, dtype=np.uint8)  # no nodata, no mask
        return ds.nodata, ds.dataset_mask(window=win)
    return nodata, np.where(np.all(src == nodata, axis=0), 0, 255).astype(np.uint8)


def read_pixels(
    ds: DatasetReader, block: Block, res_m: float, nodata: float | None
) -> tuple[np.ndarray, np.ndarray, bool]:
    """All bands (nodata pixels 0 in every band) and validity of a block on its grid, and
    whether the block was an aligned read (no warp)."""
    win = aligned_window(block, ds.crs.to_string(), ds.transform)
    if win is not None:
        return (*_read_aligned(ds, block, win, nodata), True)
    return (*_read_warped(ds, block, res_m, nodata), False)


def interleaved(count: int, shape: tuple[int, int], dtype: str) -> np.ndarray:
    """A zeroed (bands, H, W) array whose memory is pixel-interleaved (H, W, bands).

    GDAL reads and warps into it at full speed, and the RGB of an 8-bit source is then a view
    of it, not numpy's slow (5x) transposing copy.
    """
    return np.zeros((*shape, count), dtype=dtype).transpose(2, 0, 1)


def _read_aligned(
    ds: DatasetReader, block: Block, aligned: Window, nodata: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """A plain window read, zero outside the raster: what a warp onto the raster's own grid
    gives (GDAL's nodata test is per pixel over all bands, so a pixel stays as it is)."""
    out = interleaved(ds.count, block.shape, ds.dtypes[0])
    ok = np.zeros(block.shape, dtype=bool)
    part = clip(aligned, ds.width, ds.height)
    if part is None:
        return out, ok
    win, ys, xs = part
    inside = out[:, ys, xs]
    ds.read(out=inside, window=win)
    if nodata is None and all(MaskFlags.all_valid in f for f in ds.mask_flag_enums):
        ok[ys, xs] = True  # no nodata, no mask: every pixel read is valid (no mask array)
    else:
        ok[ys, xs] = window_mask(ds, win, inside, nodata)[1] > 0
    if not ok.all():
        out[:, ~ok] = 0
    return out, ok


def _read_warped(
    ds: DatasetReader, block: Block, res_m: float, nodata: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """One window read and two warps (pixels, then the mask by nearest) for the whole block."""
    out = interleaved(ds.count, block.shape, ds.dtypes[0])
    valid = np.zeros(block.shape, dtype=np.uint8)
    crs = ds.crs.to_string()
    win = source_window(block.bounds, block.crs, crs, ds.transform, ds.width, ds.height)
    if win is None:
        return out, valid.astype(bool)
    src = interleaved(ds.count, (int(win.height), int(win.width)), ds.dtypes[0])
    ds.read(out=src, window=win)
    nodata, mask = window_mask(ds, win, src, nodata)
    common = {
        "src_transform": ds.window_transform(win),
        "src_crs": ds.crs,
        "dst_transform": block.transform,
        "dst_crs": block.crs,
    }
    method, opts = resampling(block.gsd_m, res_m), _scale_options(block.gsd_m, res_m)
    reproject(src, out, src_nodata=nodata, dst_nodata=0, resampling=method, **common, **opts)
    reproject(mask, valid, src_nodata=None, resampling=Resampling.nearest, **common)
    ok = valid > 0
    if not ok.all():
        out[:, ~ok] = 0
    return out, ok


def run_blocks(
    tiles: Sequence[Tile], blocks: list[Block], read_block: Callable[[Block], list[T]]
) -> list[T | Exception]:
    """Per tile, what ``read_block`` made of its block; a failed block is read tile by tile."""
    out: list[T | Exception | None] = [None] * len(tiles)
    for block in blocks:
        try:
            results: list[T | Exception] = list(read_block(block))
        except RasterioError as e:
            results = [e] if len(block.tiles) == 1 else _one_by_one(read_block, block)
        for i, r in zip(block.index, results, strict=True):
            out[i] = r
    return [r if r is not None else ValueError("tile in no block") for r in out]


def _one_by_one(read_block: Callable[[Block], list[T]], block: Block) -> list[T | Exception]:
    """Each tile of a block read alone, its RasterioError in place of its pixels."""
    out: list[T | Exception] = []
    for t in block.tiles:
        single = Block(block.crs, block.gsd_m, block.size_px, t.col, t.row, 1, 1, (0,), (t,))
        try:
            out.append(read_block(single)[0])
        except RasterioError as e:
            out.append(e)
    return out
