"""Imagery from Google Earth Engine (imagery type ``earthengine``): an ``ee.Image`` composite
of a collection, its pixels fetched per tile with ``ee.data.computePixels``.

The image is ``collection`` filtered by ``start`` / ``end`` (end exclusive, as ``filterDate``)
and ``max_cloud_cover`` (on the images' ``cloud_property``), each image optionally cloud-masked
(``cloud_mask``: Sentinel-2's SCL or QA60 band) and resampled, reduced to one image
(``composite``: ``median``, or ``mosaic`` for collections such as NAIP), its ``bands``
selected, masked pixels set to 0 (nodata) and cast to ``dtype``. Each tile is one
``computePixels`` request on the tile's own grid (CRS, affine transform, size), sent to the
high-volume endpoint, up to ``max_concurrency`` at a time per shard batch, each bounded by
``deadline_s`` and retried (``retries``, ``backoff_s``; ``ee_client.with_retries``); a tile
that still fails is rejected with the reason, and the shard completes.

Before any work the driver connects (credentials and project from the environment:
``ee_client``) and asks once (``value:compute``) how many images match, their band names,
native resolution and CRS: a missing credential, a refused project, an empty match or an
unknown band stops the build (exit 2). Samples record the collection, the composite as
``item_id``, the date range as ``acquired`` and the endpoint as ``asset_href``.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import numpy as np
import shapely
from pydantic import BaseModel, ConfigDict, Field, model_validator
from shapely.geometry.base import BaseGeometry

from geoweave.errors import FatalError
from geoweave.protocols import TileImage
from geoweave.registry import IMAGERY_SOURCES
from geoweave.sources.ee_client import (
    HIGH_VOLUME_URL,
    EarthEngineError,
    connect,
    is_refusal,
    refused,
    require_ee,
)
from geoweave.sources.ee_client import with_retries as _with_retries
from geoweave.sources.imagery import stretch_rgb8
from geoweave.tile import Tile

SECRET_KEYS = {"credentials", "service_account", "private_key", "key_file", "token", "key"}
# Sentinel-2 cloud masks: SCL classes cloud shadow, cloud medium / high probability, cirrus;
# QA60 bits 10 (opaque cloud) and 11 (cirrus).
SCL_CLOUDY = (3, 8, 9, 10)
QA60_BITS = (1 << 10, 1 << 11)


class EarthEngineOptions(BaseModel):
    """The ``earthengine`` options of a recipe's imagery section (no credentials: those come
    from the environment, see ``geoweave.sources.ee_client``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    collection: str = Field(description="an ImageCollection id, e.g. COPERNICUS/S2_SR_HARMONIZED")
    start: dt.date
    end: dt.date = Field(description="exclusive, as ee.ImageCollection.filterDate")
    max_cloud_cover: float | None = Field(None, ge=0, le=100)
    cloud_property: str = "CLOUDY_PIXEL_PERCENTAGE"
    cloud_mask: Literal["none", "s2_scl", "s2_qa60"] = "none"
    bands: list[str] = Field(default=["B4", "B3", "B2"], min_length=1)
    rgb: list[int] = Field(default=[1, 2, 3], description="1-based positions in bands: R, G, B")
    composite: Literal["median", "mosaic"] = "median"
    resampling: Literal["nearest", "bilinear", "bicubic"] = "bilinear"
    dtype: Literal["uint8", "uint16", "int16", "float32"] = "float32"
    scale: Literal["none"] | tuple[float, float] = Field(
        (0.0, 3000.0), description="8-bit stretch [min, max] (Sentinel-2 L2A reflectance x 1e4)"
    )
    file_format: Literal["npy", "geotiff"] = "npy"
    url: str = Field(HIGH_VOLUME_URL, description="the Earth Engine API endpoint")
    project: str | None = None
    bounds: tuple[float, float, float, float] = (-180.0, -90.0, 180.0, 90.0)
    max_concurrency: int = Field(8, ge=1, le=64)
    deadline_s: float = Field(60.0, gt=0)
    retries: int = Field(4, ge=0, le=20)
    backoff_s: float = Field(1.0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _no_secrets(cls, data: Any) -> Any:
        if isinstance(data, dict) and SECRET_KEYS & set(data):
            raise ValueError(
                "credentials never go in the recipe: set EE_SERVICE_ACCOUNT_JSON or "
                "GOOGLE_APPLICATION_CREDENTIALS, or run `earthengine authenticate`"
            )
        return data

    @model_validator(mode="after")
    def _consistent(self) -> EarthEngineOptions:
        w, s, e, n = self.bounds
        if not (-180 <= w < e <= 180 and -90 <= s < n <= 90):
            raise ValueError("bounds must be [west, south, east, north] in degrees, west < east")
        if self.end <= self.start:
            raise ValueError("end must be after start (end is exclusive)")
        if len(self.rgb) not in (1, 3) or not all(1 <= b <= len(self.bands) for b in self.rgb):
            raise ValueError(f"rgb must list 1 or 3 positions in bands (1..{len(self.bands)})")
        return self


def grid_of(tile: Tile) -> dict[str, Any]:
    """The ``computePixels`` grid of a tile: its CRS, affine transform and size."""
    a = tile.transform
    return {
        "dimensions": {"width": tile.size_px, "height": tile.size_px},
        "affineTransform": {"scaleX": a.a, "shearX": a.b, "translateX": a.c,
                            "shearY": a.d, "scaleY": a.e, "translateY": a.f},
        "crsCode": tile.crs,
    }  # fmt: skip


def decode_pixels(result: Any, file_format: str) -> np.ndarray:
    """(bands, H, W) from ``computePixels``: a structured NumPy array (one field per band) or
    GeoTIFF bytes."""
    if file_format == "npy":
        return np.stack([result[n] for n in result.dtype.names])
    import rasterio

    with rasterio.MemoryFile(io.BytesIO(result)) as mem, mem.open() as ds:
        return ds.read()


@IMAGERY_SOURCES.add("earthengine")
class EarthEngineSource:
    Options = EarthEngineOptions

    def __init__(
        self, opts: EarthEngineOptions, name: str, license: str = "see source",
        acquired: str | None = None,
    ) -> None:  # fmt: skip
        self.name, self.opts, self.license = name, opts, license
        self.acquired = acquired or f"{opts.start.isoformat()}/{opts.end.isoformat()}"
        self.item_id = f"{opts.collection} {opts.composite} {self.acquired}"
        self.project = connect(opts.url, opts.project, opts.deadline_s)
        self.href = f"{opts.url}/v1/projects/{self.project}/image:computePixels"
        self._image: Any = None
        info = self._describe()
        self.crs: str = info["crs"]
        self.res_m: float = float(info["scale"])
        self.count, self.dtype = len(opts.bands), opts.dtype
        n = len(opts.rgb)
        lo, hi = (0.0, 255.0) if opts.scale == "none" else opts.scale
        self.stretch = (np.full(n, float(lo)), np.full(n, float(hi)))

    @classmethod
    def from_options(
        cls, opts: EarthEngineOptions, name: str, license: str = "see source",
        acquired: str | None = None,
    ) -> EarthEngineSource:  # fmt: skip
        return cls(opts, name, license, acquired)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_image"} | {"_image": None}

    def _collection(self) -> Any:
        ee, o = require_ee(), self.opts
        col = ee.ImageCollection(o.collection).filterDate(o.start.isoformat(), o.end.isoformat())
        if o.max_cloud_cover is not None:
            col = col.filter(ee.Filter.lte(o.cloud_property, o.max_cloud_cover))
        return col

    def _describe(self) -> dict[str, Any]:
        """How many images match, and the first one's bands, resolution and CRS (one
        ``value:compute`` each); FatalError naming the option that is wrong."""
        ee, o = require_ee(), self.opts
        col = self._collection()
        count = self._value(col.size(), "counting the images")
        if not count:
            raise FatalError(
                f"imagery {self.name}: no image of {o.collection} matches start {o.start}, "
                f"end {o.end} and max_cloud_cover {o.max_cloud_cover}"
            )
        first = col.first()
        proj = first.select([o.bands[0]]).projection()
        info: dict[str, Any] = self._value(
            ee.Dictionary({"bands": first.bandNames(), "scale": proj.nominalScale(),
                           "crs": proj.crs()}), "reading the band names")  # fmt: skip
        missing = [b for b in o.bands if b not in info["bands"]]
        if missing:
            raise FatalError(
                f"imagery {self.name}.bands: {missing} not in {o.collection} "
                f"(its bands: {info['bands']})"
            )
        return info

    def _value(self, obj: Any, what: str) -> Any:
        ee, o = require_ee(), self.opts
        try:
            return _with_retries(lambda: ee.data.computeValue(obj), o.retries, o.backoff_s, what)
        except EarthEngineError as e:
            cause = e.__cause__ or e
            if is_refusal(cause):
                raise FatalError(f"imagery {self.name}: {refused(cause, self.project)}") from None
            raise FatalError(f"imagery {self.name}: Earth Engine failed {e}") from None

    def image(self) -> Any:
        """The composite as an ``ee.Image`` (built once per process; it does not pickle)."""
        if self._image is not None:
            return self._image
        o = self.opts
        col = self._collection().map(self._prepare)
        img = col.median() if o.composite == "median" else col.mosaic()
        img = img.select(o.bands).unmask(0, False)
        self._image = getattr(img, {"uint8": "toUint8", "uint16": "toUint16",
                                    "int16": "toInt16", "float32": "toFloat"}[o.dtype])()  # fmt: skip
        return self._image

    def _prepare(self, img: Any) -> Any:
        """One image of the collection: cloud-masked, resampled (``Collection.map`` body)."""
        o = self.opts
        if o.cloud_mask == "s2_scl":
            scl = img.select("SCL")
            keep = scl.neq(SCL_CLOUDY[0])
            for c in SCL_CLOUDY[1:]:
                keep = keep.And(scl.neq(c))
            img = img.updateMask(keep)
        elif o.cloud_mask == "s2_qa60":
            qa = img.select("QA60")
            img = img.updateMask(
                qa.bitwiseAnd(QA60_BITS[0]).eq(0).And(qa.bitwiseAnd(QA60_BITS[1]).eq(0))
            )
        return img if o.resampling == "nearest" else img.resample(o.resampling)

    def footprint(self) -> BaseGeometry:
        """The ``bounds`` option (the whole world unless set: give the recipe an area), its
        edges densified so that none spans 180 degrees (it would read as crossing the
        antimeridian)."""
        return shapely.segmentize(shapely.box(*self.opts.bounds), 10.0)

    def plan(self, tiles: Sequence[Tile]) -> list[str | None]:
        """Per tile, the composite (the same image for all) where the tile meets ``bounds``."""
        b = np.array([t.bbox_lonlat() for t in tiles]).reshape(-1, 4)
        hits = shapely.intersects(self.footprint(), shapely.box(b[:, 0], b[:, 1], b[:, 2], b[:, 3]))
        return [self.item_id if hit else None for hit in hits]

    def read(self, tiles: Sequence[Tile]) -> list[TileImage | Exception]:
        """One ``computePixels`` per tile, ``max_concurrency`` at a time."""
        connect(self.opts.url, self.opts.project, self.opts.deadline_s)  # this process's client
        image = self.image()
        workers = max(1, min(self.opts.max_concurrency, len(tiles)))
        with ThreadPoolExecutor(workers, thread_name_prefix="ee") as pool:
            return list(pool.map(lambda t: self._read_tile(image, t), tiles))

    def _read_tile(self, image: Any, tile: Tile) -> TileImage | Exception:
        ee, o = require_ee(), self.opts
        params = {"expression": image, "grid": grid_of(tile),
                  "fileFormat": "NUMPY_NDARRAY" if o.file_format == "npy" else "GEO_TIFF"}  # fmt: skip
        try:
            result = _with_retries(lambda: ee.data.computePixels(params), o.retries, o.backoff_s,
                                   f"computePixels of tile {tile.key}")  # fmt: skip
            data = decode_pixels(result, o.file_format)
        except Exception as e:
            return e
        size = (tile.size_px, tile.size_px)
        if data.shape != (len(o.bands), *size):
            return EarthEngineError(
                f"computePixels returned {data.shape}, not {len(o.bands)} x {size}"
            )
        valid = (data != 0).any(axis=0)
        rgb = stretch_rgb8(data, valid, o.rgb, *self.stretch)
        return TileImage(data, valid, rgb, self.item_id, self.acquired, o.collection, self.href)
