"""Land-cover class rasters (ESA WorldCover, CORINE, ...) summarised as class fractions per tile.

A tile's ``landcover`` field is the share of each class among the tile's valid pixels. The class
raster is resampled onto the tile grid itself (CRS, transform, size), so a 20 m CORINE raster in
EPSG:3067 and a 10 m Sentinel-2 tile in UTM are compared pixel for pixel. Only the window of the
raster under the tile is read, so a continental raster costs no more than a city one.
"""

from __future__ import annotations

import csv
import functools
import io
import math
from collections.abc import Sequence
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.transform import array_bounds
from rasterio.warp import reproject, transform_bounds
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from geoweave.errors import FatalError
from geoweave.sources.rasters import check_readable, ground_resolution
from geoweave.sources.warp import Block, aligned_window, blocks_of, clip, run_blocks, source_window
from geoweave.tile import Tile, transform_bbox

LEGEND_PACKAGE = "geoweave.sources.legends"
_INVALID = -1  # class value of pixels that are nodata or outside the raster, after casting
_MARGIN = 2  # source pixels read around the tile, so resampling kernels see their neighbours


def shipped_legends() -> list[str]:
    """Names of the legends shipped with geoweave (``esa_worldcover``, ``corine``, ...)."""
    files = resources.files(LEGEND_PACKAGE).iterdir()
    return sorted(f.name[: -len(".csv")] for f in files if f.name.endswith(".csv"))


def load_legend(name_or_path: str) -> dict[int, str]:
    """Read a legend: raster class code -> class name.

    Args:
        name_or_path: a shipped legend name (see ``shipped_legends()``) or the path of a CSV file
            with columns ``code,name`` (and optionally ``color``); lines starting with ``#`` are
            comments.

    Returns:
        The class names keyed by raster value.

    Raises:
        FatalError: the name is neither shipped nor an existing file, or the CSV is malformed.
    """
    shipped = shipped_legends()
    if name_or_path in shipped:
        resource = resources.files(LEGEND_PACKAGE) / f"{name_or_path}.csv"
        return _parse_legend(resource.read_text(encoding="utf-8"), name_or_path)
    path = Path(name_or_path)
    if path.is_file():
        return _parse_legend(path.read_text(encoding="utf-8"), str(path))
    raise FatalError(
        f"unknown land-cover legend {name_or_path!r}: give one of {', '.join(shipped)} "
        "or the path of a CSV file with columns code,name"
    )


def _parse_legend(text: str, origin: str) -> dict[int, str]:
    """Parse legend CSV text, skipping ``#`` comment lines."""
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    reader = csv.DictReader(io.StringIO("\n".join(lines)))
    if not {"code", "name"} <= set(reader.fieldnames or []):
        raise FatalError(f"legend {origin} needs a header with columns code,name")
    legend: dict[int, str] = {}
    for row in reader:
        try:
            code = int(row["code"])
        except (TypeError, ValueError):
            raise FatalError(
                f"legend {origin}: class code {row['code']!r} is not an integer"
            ) from None
        if code in legend:
            raise FatalError(f"legend {origin}: class code {code} appears twice")
        legend[code] = row["name"].strip()
    return legend


class LandCoverSource:
    """A categorical land-cover raster and the legend that names its classes.

    The raster is opened for each tile rather than held open, so the source pickles into Ray
    tasks. Pixels that are nodata (or masked) in the raster, or outside it, are not valid.
    """

    def __init__(self, path: str | Path, legend: str, name: str = "landcover") -> None:
        """Open the raster and read the legend.

        Args:
            path: a GeoTIFF/COG (or any GDAL raster) of integer class codes, with a CRS.
            legend: a shipped legend name or a legend CSV path (see ``load_legend``).
            name: the source name recorded in sample provenance.

        Raises:
            FatalError: the raster is unreadable or has no CRS, or the legend is unknown.
        """
        self.path = Path(path)
        self.name = name
        self.legend_name = legend
        self.legend = load_legend(legend)
        try:
            with rasterio.open(self.path) as ds:
                self.crs: CRS | None = ds.crs
                self.transform: Affine = ds.transform
                self.width: int = ds.width
                self.height: int = ds.height
                self.nodata: float | None = ds.nodata
                self.bounds = tuple(ds.bounds)
                self.res_m = ground_resolution(ds) if ds.crs is not None else 0.0
                check_readable(ds, self.path, "land-cover raster")
        except RasterioIOError as exc:
            raise FatalError(f"cannot read land-cover raster {self.path}: {exc}") from None
        if self.crs is None:
            raise FatalError(
                f"land-cover raster {self.path} has no CRS; assign the one it was made in, "
                f"e.g. `rio edit-info --crs EPSG:3035 {self.path}`"
            )

    @property
    def bounds_lonlat(self) -> tuple[float, float, float, float]:
        """The raster's footprint as (west, south, east, north) in degrees."""
        west, south, east, north = transform_bounds(self.crs, "EPSG:4326", *self.bounds)
        return (west, south, east, north)

    def fractions(self, tiles: Sequence[Tile]) -> list[tuple[dict[str, float], float] | Exception]:
        """Per tile, (class name -> fraction of its valid pixels, fraction of pixels valid).

        The batch is read block by block (``geoweave.sources.warp``): one window read and one
        nearest/mode warp per block, none when the tile grid is the raster's own, then one
        ``bincount`` gives every tile's class counts. Identical to ``coverage`` per tile on an
        aligned grid; elsewhere a block warp can resolve a few edge or tie pixels differently
        (tests/test_pixel_path.py bounds the share difference).
        """
        counted = [self._counting_grid(t) for t in tiles]
        read = functools.partial(self._block_fractions, self._dataset())
        return run_blocks(counted, blocks_of(counted, self.res_m), read)

    def _dataset(self) -> rasterio.DatasetReader:
        """The raster, opened once per process (a shard task reuses it; pickles drop it)."""
        ds = self.__dict__.get("_ds")
        if ds is None:
            ds = self.__dict__["_ds"] = rasterio.open(self.path)
        return ds

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_ds"}

    def _counting_grid(self, tile: Tile) -> Tile:
        """The tile on a grid no finer than the class raster, where the fractions are counted.

        Under a 40 m class map a 256 px tile at 10 m is counted on 64 x 64 cells of 40 m (the
        largest factor that divides the tile size): the same footprint, 16x fewer pixels to
        warp and count, and the same fractions when the grids nest (each class pixel covers
        a whole number of tile pixels).
        """
        factor = int(self.res_m / tile.gsd_m + 1e-6) if self.res_m > 0 else 1
        while factor > 1 and tile.size_px % factor:
            factor -= 1
        if factor <= 1:
            return tile
        return replace(tile, gsd_m=tile.gsd_m * factor, size_px=tile.size_px // factor)

    def _block_fractions(
        self, ds: rasterio.DatasetReader, block: Block
    ) -> list[tuple[dict[str, float], float]]:
        """Class fractions of every tile of a block, from one count over the block."""
        classes = self._block_classes(ds, block)
        ids = block.tile_ids()
        n = len(block.tiles)
        ok = (classes != _INVALID) & (ids >= 0)
        top = int(classes.max(initial=-1, where=ok))
        if int(classes.min(initial=0, where=ok)) >= 0 and top < 1 << 16:
            # Small non-negative codes (every shipped legend): one bincount over the block, no
            # sort; invalid pixels and pixels outside any tile go to a spare bin.
            k = top + 2
            flat = np.where(ok, ids * k + classes, n * k)
            counts = np.bincount(flat.ravel(), minlength=n * k + 1)[: n * k].reshape(n, k)
            codes = np.arange(k)
        else:
            codes, inv = np.unique(classes[ok], return_inverse=True)
            k = len(codes)
            counts = np.bincount(ids[ok] * k + inv, minlength=n * k).reshape(n, k)
        return [self._shares(codes, row, block.size_px**2) for row in counts]

    def _shares(
        self, codes: np.ndarray, counts: np.ndarray, pixels: int
    ) -> tuple[dict[str, float], float]:
        """(class name -> share, valid fraction) from per-code counts, summed as ``coverage``."""
        valid = int(counts.sum())
        if valid == 0:
            return {}, 0.0
        shares: dict[str, float] = {}
        present = np.flatnonzero(counts)  # a handful of the legend's codes (0 ... 101 for ESA)
        for code, count in zip(codes[present].tolist(), counts[present].tolist(), strict=True):
            name = self._class_name(code)
            shares[name] = shares.get(name, 0.0) + count / valid
        return shares, valid / pixels

    def _block_classes(self, ds: rasterio.DatasetReader, block: Block) -> np.ndarray:
        """The class raster on the block grid as int32, ``_INVALID`` where not valid."""
        h, w = block.shape
        out = np.full((h, w), _INVALID, dtype=np.int32)
        crs = self.crs.to_string() if self.crs is not None else ""
        aligned = aligned_window(block, crs, self.transform)
        if aligned is not None:
            part = clip(aligned, self.width, self.height)
            if part is not None:
                win, ys, xs = part
                out[ys, xs] = self._read_classes(ds, win)
            return out
        win = source_window(block.bounds, block.crs, crs, self.transform, self.width, self.height)
        if win is None:
            return out
        reproject(
            self._read_classes(ds, win),
            out,
            src_transform=window_transform(win, self.transform),
            src_crs=self.crs,
            src_nodata=_INVALID,
            dst_transform=block.transform,
            dst_crs=block.crs,
            dst_nodata=_INVALID,
            resampling=self._resampling(transform_bbox(block.bounds, block.crs, crs), w, h),
        )
        return out

    @staticmethod
    def _read_classes(ds: rasterio.DatasetReader, win: Window) -> np.ndarray:
        """Class codes of a window as int32, ``_INVALID`` where masked."""
        data = ds.read(1, window=win)
        mask = ds.read_masks(1, window=win) > 0
        return np.where(mask, data.astype(np.int32), _INVALID)

    def coverage(
        self, crs: str, transform: Affine, width: int, height: int
    ) -> tuple[dict[str, float], float]:
        """Class fractions of the valid pixels, and the fraction of tile pixels that are valid.

        The raster is resampled onto the tile grid with nearest neighbour when tile pixels are
        as fine as or finer than the raster's, and with the mode (majority class) when coarser.
        Arguments are as in ``fractions``.
        """
        classes = self._on_grid(CRS.from_user_input(crs), transform, width, height)
        codes, counts = np.unique(classes[classes != _INVALID], return_counts=True)
        valid = int(counts.sum())
        if valid == 0:
            return {}, 0.0
        shares: dict[str, float] = {}
        for code, count in zip(codes, counts, strict=True):  # two codes may share a name
            name = self._class_name(int(code))
            shares[name] = shares.get(name, 0.0) + int(count) / valid
        return shares, valid / (width * height)

    def _class_name(self, code: int) -> str:
        return self.legend.get(code, f"class {code}")

    def _on_grid(self, crs: CRS, transform: Affine, width: int, height: int) -> np.ndarray:
        """The class raster resampled onto the tile grid as int32, ``_INVALID`` where not valid."""
        out = np.full((height, width), _INVALID, dtype=np.int32)
        tile_bounds = transform_bounds(crs, self.crs, *array_bounds(height, width, transform))
        window = self._window(tile_bounds)
        if window is None:
            return out
        with rasterio.open(self.path) as ds:
            data = ds.read(1, window=window)
            mask = ds.read_masks(1, window=window) > 0
        src = np.where(mask, data.astype(np.int32), _INVALID)
        reproject(
            src,
            out,
            src_transform=window_transform(window, self.transform),
            src_crs=self.crs,
            src_nodata=_INVALID,
            dst_transform=transform,
            dst_crs=crs,
            dst_nodata=_INVALID,
            resampling=self._resampling(tile_bounds, width, height),
        )
        return out

    def _window(self, bounds: tuple[float, float, float, float]) -> Window | None:
        """The raster window covering ``bounds`` (raster CRS) plus a margin; None if disjoint."""
        west, south, east, north = bounds
        inv = ~self.transform
        corners = [(x, y) for x in (west, east) for y in (south, north)]
        cols = [inv.a * x + inv.b * y + inv.c for x, y in corners]
        rows = [inv.d * x + inv.e * y + inv.f for x, y in corners]
        col0 = max(math.floor(min(cols)) - _MARGIN, 0)
        row0 = max(math.floor(min(rows)) - _MARGIN, 0)
        col1 = min(math.ceil(max(cols)) + _MARGIN, self.width)
        row1 = min(math.ceil(max(rows)) + _MARGIN, self.height)
        if col0 >= col1 or row0 >= row1:
            return None
        return Window(col0, row0, col1 - col0, row1 - row0)

    def _resampling(
        self, bounds: tuple[float, float, float, float], width: int, height: int
    ) -> Resampling:
        """Nearest when a tile pixel is no larger than a raster pixel, else the mode."""
        west, south, east, north = bounds
        tile_pixel = math.sqrt((east - west) / width * (north - south) / height)
        raster_pixel = math.sqrt(abs(self.transform.determinant))
        return Resampling.mode if tile_pixel > raster_pixel * (1 + 1e-6) else Resampling.nearest


def day_number(text: str | None) -> int | None:
    """The day number of ``YYYY-MM-DD...`` (an ISO date or datetime) or ``YYYY`` (taken as
    1 July); None for no date or one that does not parse."""
    import datetime as dt

    if not text:
        return None
    try:
        if len(text) == 4 and text.isdigit():
            return dt.date(int(text), 7, 1).toordinal()
        return dt.date.fromisoformat(text[:10]).toordinal()
    except ValueError:
        return None


def nearest_date(acquired: str | None, dates: Sequence[str]) -> str | None:
    """The date of ``dates`` nearest to ``acquired`` (the earlier on a tie), None when the
    sample has no date or there are no dates."""
    day = day_number(acquired)
    known = [(n, d) for d in dates if (n := day_number(d)) is not None]
    if day is None or not known:
        return None
    return min(known, key=lambda nd: (abs(nd[0] - day), nd[0]))[1]
