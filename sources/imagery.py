"""Local GeoTIFF / COG imagery: read a tile's window, reproject it onto the tile grid.

Any CRS and resolution; nodata and internal masks are honoured and reported per pixel. The
8-bit RGB for the JPEG is a band choice plus a linear stretch fixed per source (not per tile),
so neighbouring tiles share one colour scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from pyproj import Geod
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.warp import reproject
from rasterio.windows import Window, from_bounds

from geoweave.builders.errors import FatalError
from geoweave.sources.grid import BBox, Tile, transform_bbox, transformer
from geoweave.sources.rasters import check_readable


@dataclass(slots=True)
class TilePixels:
    """Pixels of one tile on its grid: all bands, and which pixels hold data."""

    data: np.ndarray  # (bands, H, W), the source dtype
    valid: np.ndarray  # (H, W) bool

    @property
    def nodata_fraction(self) -> float:
        return float(1.0 - self.valid.mean())


def ground_resolution(ds: rasterio.DatasetReader) -> float:
    """Metres on the ground of one pixel step at the image centre, in any CRS.

    Web Mercator "30 m" pixels are 24 m at 38° N; geographic pixels are in degrees.
    """
    cx, cy = ds.xy(ds.height // 2, ds.width // 2)
    lon, lat = transformer(ds.crs.to_string(), "EPSG:4326").transform(
        [cx, cx + ds.res[0]], [cy, cy]
    )
    return float(Geod(ellps="WGS84").inv(lon[0], lat[0], lon[1], lat[1])[2])


class GeoTiffSource:
    """One local raster, opened lazily per process (rasterio handles do not pickle)."""

    def __init__(
        self,
        name: str,
        path: str | Path,
        bands: list[int],
        scale: object = "auto",
        nodata: float | None = None,
    ) -> None:
        self.name = name
        self.path = Path(path)
        self.bands = bands
        self.nodata_override = nodata
        self._ds: rasterio.DatasetReader | None = None
        info = self._inspect()
        self.crs: str = info["crs"]
        self.count: int = info["count"]
        self.dtype: str = info["dtype"]
        self.res: float = info["res"]  # in the source CRS's units (metres, degrees, ...)
        self.res_m: float = info["res_m"]  # on the ground, at the centre of the image
        self.bounds_lonlat: BBox = info["bounds_lonlat"]
        bad = [b for b in bands if b > self.count]
        if bad:
            raise FatalError(f"{self.path}: has {self.count} bands; imagery.bands asks for {bad}")
        self.stretch = self._stretch(scale)

    def _inspect(self) -> dict:
        if not self.path.is_file():
            raise FatalError(f"imagery file not found: {self.path} (check imagery.path)")
        try:
            with rasterio.open(self.path) as ds:
                if ds.crs is None:
                    raise FatalError(
                        f"{self.path}: the raster has no CRS; assign one "
                        "(e.g. `rio edit-info --crs EPSG:xxxx FILE`) and run again"
                    )
                check_readable(ds, self.path, "imagery")
                return {
                    "crs": ds.crs.to_string(),
                    "count": ds.count,
                    "dtype": ds.dtypes[0],
                    "res": float(abs(ds.res[0])),
                    "res_m": ground_resolution(ds),
                    "bounds_lonlat": transform_bbox(
                        tuple(ds.bounds), ds.crs.to_string(), "EPSG:4326"
                    ),
                }
        except RasterioError as e:
            raise FatalError(
                f"{self.path}: not a readable GeoTIFF ({e}); re-export or re-download it"
            ) from e

    @property
    def ds(self) -> rasterio.DatasetReader:
        if self._ds is None:
            self._ds = rasterio.open(self.path)
        return self._ds

    def _stretch(self, scale: object) -> tuple[np.ndarray, np.ndarray]:
        """Per-band (low, high) for the 8-bit stretch."""
        n = len(self.bands)
        if isinstance(scale, list | tuple):
            return np.full(n, float(scale[0])), np.full(n, float(scale[1]))
        if scale == "none" or (scale == "auto" and self.dtype == "uint8"):
            return np.zeros(n), np.full(n, 255.0)
        step = max(1, max(self.ds.width, self.ds.height) // 1024)
        shape = (n, max(1, self.ds.height // step), max(1, self.ds.width // step))
        arr = self.ds.read(self.bands, out_shape=shape, masked=True)
        if self.nodata_override is not None:
            fill = np.all(arr.data == self.nodata_override, axis=0)
            arr = np.ma.masked_array(
                arr.data, np.broadcast_to(fill, arr.shape) | np.ma.getmaskarray(arr)
            )
        lo, hi = np.zeros(n), np.full(n, 255.0)
        for i in range(n):
            vals = arr[i].compressed()
            if vals.size:
                lo[i], hi[i] = np.percentile(vals, [2, 98])
        return lo, np.maximum(hi, lo + 1)

    def read_tile(self, tile: Tile) -> TilePixels:
        """All bands of the tile, resampled to its grid (average when coarser)."""
        h = w = tile.size_px
        out = np.zeros((self.count, h, w), dtype=self.dtype)
        valid = np.zeros((h, w), dtype=np.uint8)
        window = self._window(tile)
        if window is None:
            return TilePixels(out, valid.astype(bool))
        src = self.ds.read(window=window)
        nodata = self.ds.nodata
        if self.nodata_override is None:
            mask = self.ds.dataset_mask(window=window)
        else:
            nodata = self.nodata_override
            mask = np.where(np.all(src == nodata, axis=0), 0, 255).astype(np.uint8)
        common = {
            "src_transform": self.ds.window_transform(window),
            "src_crs": self.ds.crs,
            "dst_transform": tile.transform,
            "dst_crs": tile.crs,
        }
        coarser = tile.gsd_m > self.res_m * 1.5
        method = Resampling.average if coarser else Resampling.bilinear
        reproject(src, out, src_nodata=nodata, dst_nodata=0, resampling=method, **common)
        reproject(mask, valid, src_nodata=None, resampling=Resampling.nearest, **common)
        ok = valid > 0
        out[:, ~ok] = 0  # one rule for every output: a nodata pixel is 0 in every band
        return TilePixels(out, ok)

    def _window(self, tile: Tile) -> Window | None:
        b = transform_bbox(tile.bounds, tile.crs, self.crs)
        margin = 2 * self.res
        b = (b[0] - margin, b[1] - margin, b[2] + margin, b[3] + margin)
        win = from_bounds(*b, transform=self.ds.transform)
        full = Window(0, 0, self.ds.width, self.ds.height)
        try:
            win = win.intersection(full)
        except Exception:  # rasterio raises WindowError when they do not overlap
            return None
        win = win.round_offsets().round_lengths()
        return win if win.width > 0 and win.height > 0 else None

    def to_rgb8(self, pixels: TilePixels) -> np.ndarray:
        """(H, W, 3) uint8 from the recipe's bands and this source's stretch; nodata is black."""
        idx = [b - 1 for b in self.bands]
        arr = pixels.data[idx].astype(np.float32)
        lo, hi = self.stretch
        arr = (arr - lo[:, None, None]) / (hi - lo)[:, None, None] * 255.0
        rgb = np.clip(arr, 0, 255).astype(np.uint8)
        if rgb.shape[0] == 1:
            rgb = np.repeat(rgb, 3, axis=0)
        rgb[:, ~pixels.valid] = 0
        return np.ascontiguousarray(rgb.transpose(1, 2, 0))
