"""Checks and statistics shared by every raster input (imagery and land cover).

Both stay cheap on any input size: they read the header, a couple of blocks and the smallest
overview, never the whole raster, so a 10 GB COG costs the same up-front check as a city tile.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import rasterio
from pyproj import Geod
from rasterio.errors import RasterioError
from rasterio.windows import Window

from geoweave.errors import FatalError
from geoweave.tile import transformer

STATS_MIN_PX = 256  # an overview used for the stretch has at least this many px on its long side
STATS_MAX_BLOCKS = 64  # blocks sampled for the stretch when no overview is large enough
STATS_SEED = 0
BLOCK_CACHE_MB = 64  # GDAL's block cache in a build, unless GDAL_CACHEMAX is set


def streaming_block_cache() -> None:
    """Size GDAL's block cache for a build: ``GDAL_CACHEMAX`` = 64 MB unless it is set.

    A build reads each raster block about once (a block's margin twice), so GDAL's default
    cache, 5% of the RAM, only fills fresh memory with blocks never read again. 64 MB keeps a
    block row of a 4096 px window of 4 uint16 bands several times over and recycles its
    memory: 4% faster reads of 128 px tiles, 8% of 256 px ones, measured on the bare floor and
    on the build alike. GDAL reads the setting at a process's first block read, so call this
    before one (a worker's sources open first; ``build`` calls it first thing).
    """
    os.environ.setdefault("GDAL_CACHEMAX", str(BLOCK_CACHE_MB))


def ground_resolution(ds: rasterio.DatasetReader) -> float:
    """Metres on the ground of one pixel step at the image centre, in any CRS.

    Web Mercator "30 m" pixels are 24 m at 38° N; geographic pixels are in degrees.
    """
    cx, cy = ds.xy(ds.height // 2, ds.width // 2)
    lon, lat = transformer(ds.crs.to_string(), "EPSG:4326").transform(
        [cx, cx + ds.res[0]], [cy, cy]
    )
    return float(Geod(ellps="WGS84").inv(lon[0], lat[0], lon[1], lat[1])[2])


def block_window(ds: rasterio.DatasetReader, bx: int, by: int) -> Window:
    """The window of internal block (``bx``, ``by``) of band 1, clipped to the raster."""
    bh, bw = ds.block_shapes[0]
    x0, y0 = bx * bw, by * bh
    return Window(x0, y0, min(bw, ds.width - x0), min(bh, ds.height - y0))


def _block_counts(ds: rasterio.DatasetReader) -> tuple[int, int]:
    bh, bw = ds.block_shapes[0]
    return math.ceil(ds.width / bw), math.ceil(ds.height / bh)


def check_readable(ds: rasterio.DatasetReader, path: Path, what: str) -> None:
    """Read the first and last block and the smallest overview, so a cut-short file fails now.

    A truncated download loses the file's tail (the last block) and a broken write its head
    (the first block); the smallest overview is read when present because a reader of the
    stretch statistics goes there. A damaged block elsewhere is left to the build, which rejects
    only the tiles over it, so the check costs a few blocks however large the raster is.

    Raises:
        FatalError: naming the file, when any of those reads fails.
    """
    nx, ny = _block_counts(ds)
    try:
        ds.read(window=block_window(ds, 0, 0))
        ds.read(window=block_window(ds, nx - 1, ny - 1))
        factors = ds.overviews(1)
        if factors:
            f = max(factors)
            ds.read(out_shape=(ds.count, -(-ds.height // f), -(-ds.width // f)))
    except RasterioError as e:
        raise FatalError(
            f"{what} {path}: the pixel data cannot be read ({e}); the file is truncated or "
            "corrupt: re-export or re-download it"
        ) from e


def _overview_shape(ds: rasterio.DatasetReader) -> tuple[int, int] | None:
    """(H, W) of the smallest overview with >= ``STATS_MIN_PX`` px on its long side."""
    best = None
    for f in sorted(ds.overviews(1)):
        shape = (-(-ds.height // f), -(-ds.width // f))
        if max(shape) >= STATS_MIN_PX:
            best = shape
    return best


def _sample_windows(ds: rasterio.DatasetReader) -> list[Window]:
    """At most ``STATS_MAX_BLOCKS`` internal blocks, spread over the raster by a seeded draw."""
    nx, ny = _block_counts(ds)
    n = nx * ny
    rng = np.random.default_rng(STATS_SEED)
    picks = np.sort(rng.choice(n, size=min(n, STATS_MAX_BLOCKS), replace=False))
    return [block_window(ds, int(i % nx), int(i // nx)) for i in picks]


def _masked(arr: np.ma.MaskedArray, nodata: float | None) -> np.ma.MaskedArray:
    """Mask pixels where every band equals the recipe's nodata value, on top of the file's."""
    if nodata is None:
        return arr
    fill = np.all(arr.data == nodata, axis=0)
    return np.ma.masked_array(arr.data, np.broadcast_to(fill, arr.shape) | np.ma.getmaskarray(arr))


def _sample(ds: rasterio.DatasetReader, bands: list[int], nodata: float | None) -> list[np.ndarray]:
    """Per band, valid sample values: the chosen overview, else the sampled blocks."""
    shape = _overview_shape(ds)
    if shape is not None:
        arr = _masked(ds.read(bands, out_shape=(len(bands), *shape), masked=True), nodata)
        return [arr[i].compressed() for i in range(len(bands))]
    parts: list[list[np.ndarray]] = [[] for _ in bands]
    for win in _sample_windows(ds):
        try:
            arr = _masked(ds.read(bands, window=win, masked=True), nodata)
        except RasterioError:
            continue  # a damaged block: the build rejects its tiles, the stretch skips it
        for i in range(len(bands)):
            parts[i].append(arr[i].compressed())
    return [np.concatenate(p) if p else np.zeros(0) for p in parts]


def percentile_stretch(
    ds: rasterio.DatasetReader, bands: list[int], nodata: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-band (low, high) at the 2nd and 98th percentile of a bounded sample of the raster.

    The sample is the smallest overview with >= 256 px on its long side when the file has one,
    else at most 64 seeded blocks spread over it (the whole raster when it has fewer), so the
    statistics cost a few MB of reads on any input, and the same file gives the same stretch.
    """
    n = len(bands)
    lo, hi = np.zeros(n), np.full(n, 255.0)
    for i, vals in enumerate(_sample(ds, bands, nodata)):
        if vals.size:
            lo[i], hi[i] = np.percentile(vals, [2, 98])
    return lo, np.maximum(hi, lo + min_span(ds.dtypes[0], lo, hi))


def clipped_share(
    ds: rasterio.DatasetReader,
    bands: list[int],
    lo: np.ndarray,
    hi: np.ndarray,
    nodata: float | None,
) -> float | None:
    """The largest share, over ``bands``, of valid pixels outside ``[lo, hi]``: those the 8-bit
    stretch clips to 0 or 255. From the stretch's own bounded sample (the smallest overview of
    at least 256 px, else at most 64 seeded blocks), never a full read; None when it cannot be
    read (a damaged overview: the build rejects only the tiles it cannot read)."""
    try:
        values = _sample(ds, bands, nodata)
    except RasterioError:
        return None
    shares = [
        np.count_nonzero((v < lo[i]) | (v > hi[i])) / v.size for i, v in enumerate(values) if v.size
    ]
    return float(max(shares, default=0.0))


def min_span(dtype: str, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The narrowest stretch range: one count for integer imagery (a flat band stays flat);
    for float imagery (reflectance in 0..1, say) a millionth of the values' magnitude, so a
    0..0.5 band spans the whole 8-bit range instead of a third of it."""
    if np.issubdtype(np.dtype(dtype), np.integer):
        return np.ones_like(lo)
    return np.maximum(np.maximum(np.abs(lo), np.abs(hi)) * 1e-6, 1e-12)
