"""A large seeded UTM mosaic (RGB) and land-cover raster built from the SF Bay sample.

The real sample is only 1076 x 517 px, too small to time pixel throughput. This script
reprojects it to UTM zone 10 at ``PIXEL_M`` metres and fills a square of ``size`` px with
seeded cells: random crops of that texture, flipped or rotated, with a per-cell gain and
per-pixel noise, so tiles differ and JPEG costs what it costs on real imagery. There are no
nodata pixels. The origin sits on a multiple of the ground size of the largest benchmark tile,
so the geoweave grid at ``PIXEL_M`` is aligned with the raster and every tile is a plain window
read. The land-cover raster (ESA WorldCover codes, 4x coarser) covers the same square, so every
tile gets land-cover text. Outputs are cached under ``benchmarks/out/mosaic-*``, keyed by the
parameters, so reruns are instant.

``python benchmarks/make_mosaic.py [SIZE_PX] [SEED]`` builds one and prints its paths.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from rasterio.transform import from_origin
from rasterio.warp import Resampling, calculate_default_transform, reproject

OUT = Path(__file__).resolve().parent / "out"
SOURCE = (
    Path(__file__).resolve().parents[2] / "shared/data/sf-bay/sf_bay_landsat7_falsecolor_30m.tif"
)
CRS = "EPSG:32610"
PIXEL_M = 10.0  # mosaic pixel size = the benchmark tiles' GSD
ALIGN_M = 256 * PIXEL_M  # origin on multiples of the 256 px (and so 128 px) tile ground size
ORIGIN = (ALIGN_M * 200, ALIGN_M * 1650)  # west, north: over the SF Bay area
CELL_PX = 1024  # one seeded crop per cell; strips of this many rows are written at once
LANDCOVER_FACTOR = 4  # land-cover pixels are this many mosaic pixels wide
WORLDCOVER = np.array([10, 20, 30, 40, 50, 60, 80, 90, 95, 100], dtype=np.uint8)
VERSION = 2  # bump when the generator changes, so cached mosaics are rebuilt


@dataclass(frozen=True)
class Mosaic:
    """The files of one mosaic and the parameters they were made with."""

    image: Path
    landcover: Path
    area: Path  # GeoJSON: the raster square inset by half a pixel, so only its cells are planned
    size_px: int
    pixel_m: float
    seed: int


def texture() -> np.ndarray:
    """The sample in UTM at ``PIXEL_M`` (H, W, 3), holes filled from shifted copies, stretched."""
    with rasterio.open(SOURCE) as src:
        transform, width, height = calculate_default_transform(
            src.crs, CRS, src.width, src.height, *src.bounds, resolution=PIXEL_M
        )
        out = np.zeros((3, height, width), dtype=np.uint8)
        reproject(rasterio.band(src, [1, 2, 3]), out, dst_transform=transform, dst_crs=CRS,
                  resampling=Resampling.bilinear, src_nodata=0, dst_nodata=0)  # fmt: skip
    tex = out.transpose(1, 2, 0)
    rng = np.random.default_rng(VERSION)  # fixed: the texture is the same for every seed
    for _ in range(200):  # copy texture from elsewhere into the holes (nodata, the edges)
        holes = np.asarray((tex == 0).all(axis=2))
        if not holes.any():
            break
        shift = (
            int(rng.integers(-height // 2, height // 2)),
            int(rng.integers(-width // 2, width // 2)),
        )
        tex = np.where(holes[..., None], np.roll(tex, shift, axis=(0, 1)), tex)
    lo, hi = np.percentile(tex, [2, 98])  # the sample is dark: stretch it like an 8-bit product
    stretched = (tex.astype(np.float32) - lo) * (254 / (hi - lo)) + 1
    return np.clip(stretched, 1, 255).astype(np.uint8)  # no pixel may be all-zero


def seeded_cell(tex: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One CELL_PX square: a random crop of the texture, flipped/rotated, gained, noised."""
    h, w = tex.shape[:2]
    side = min(CELL_PX, h, w)
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    cell = np.rot90(tex[y : y + side, x : x + side], k=int(rng.integers(0, 4)))
    if rng.random() < 0.5:
        cell = cell[:, ::-1]
    if side < CELL_PX:  # a texture smaller than a cell: mirror it up to size
        reps = -(-CELL_PX // side)
        cell = np.pad(cell, ((0, reps * side - side),) * 2 + ((0, 0),), mode="symmetric")
    gain = rng.uniform(0.85, 1.15)
    noise = rng.integers(-8, 9, size=(CELL_PX, CELL_PX, 3), dtype=np.int16)
    pixels = cell[:CELL_PX, :CELL_PX].astype(np.int16) * gain + noise
    return np.clip(pixels, 1, 255).astype(np.uint8)


def write_image(path: Path, size: int, seed: int) -> None:
    """The RGB mosaic, written strip by strip (CELL_PX rows) as a tiled, uncompressed GeoTIFF."""
    tex, rng = texture(), np.random.default_rng(seed)
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8",
               "crs": CRS, "transform": from_origin(*ORIGIN, PIXEL_M, PIXEL_M), "tiled": True,
               "blockxsize": 512, "blockysize": 512, "interleave": "pixel"}  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        for top in range(0, size, CELL_PX):
            strip = np.concatenate([seeded_cell(tex, rng) for _ in range(0, size, CELL_PX)], axis=1)
            strip = strip[: size - top, :size]
            window = ((top, top + strip.shape[0]), (0, size))
            dst.write(strip.transpose(2, 0, 1), window=window)


def write_landcover(path: Path, size: int, seed: int) -> None:
    """Blocky seeded WorldCover classes over the same square, LANDCOVER_FACTOR x coarser."""
    rng = np.random.default_rng(seed + 1)
    n = -(-size // LANDCOVER_FACTOR)
    coarse = rng.choice(WORLDCOVER, size=(-(-n // 16), -(-n // 16)))
    classes = np.kron(coarse, np.ones((16, 16), dtype=np.uint8))[:n, :n]
    speckle = rng.random((n, n)) < 0.05  # small patches of another class inside each block
    classes = np.where(speckle, rng.choice(WORLDCOVER, size=(n, n)), classes)
    profile = {"driver": "GTiff", "width": n, "height": n, "count": 1, "dtype": "uint8",
               "crs": CRS, "transform": from_origin(*ORIGIN, PIXEL_M * LANDCOVER_FACTOR,
               PIXEL_M * LANDCOVER_FACTOR), "nodata": 0, "tiled": True, "blockxsize": 512,
               "blockysize": 512, "compress": "deflate"}  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(classes.astype(np.uint8), 1)


def write_area(path: Path, size: int) -> None:
    """The raster square inset by half a pixel, densified, in lon/lat (GeoJSON's CRS).

    geoweave plans every grid cell that intersects the area; the imagery footprint in lon/lat
    would bulge past the raster's UTM edges and add partly covered cells.
    """
    west, north = ORIGIN
    inset = PIXEL_M / 2
    square = shapely.box(west + inset, north - size * PIXEL_M + inset,
                         west + size * PIXEL_M - inset, north - inset)  # fmt: skip
    square = shapely.segmentize(square, max_segment_length=200.0)
    gpd.GeoDataFrame(geometry=[square], crs=CRS).to_crs("EPSG:4326").to_file(path, driver="GeoJSON")


def make_mosaic(size: int = 24576, seed: int = 0) -> Mosaic:
    """Build (or reuse the cached) mosaic of ``size`` x ``size`` px with this seed."""
    folder = OUT / f"mosaic-{size}px-{PIXEL_M:g}m-seed{seed}-v{VERSION}"
    mosaic = Mosaic(folder / "image.tif", folder / "landcover.tif", folder / "area.geojson",
                    size, PIXEL_M, seed)  # fmt: skip
    done = folder / "done.json"
    if done.exists():
        return mosaic
    folder.mkdir(parents=True, exist_ok=True)
    write_image(mosaic.image, size, seed)
    write_landcover(mosaic.landcover, size, seed)
    write_area(mosaic.area, size)
    done.write_text(json.dumps(asdict(mosaic), default=str, indent=1))
    return mosaic


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    print(json.dumps(asdict(make_mosaic(*args)), default=str, indent=1))
