"""The Earth Engine stand-in's evaluator: runs the serialized expressions the real client
sends (``value:compute``, ``image:computePixels``) over a small catalogue of images made from
the real Helsinki Sentinel-2 sample (read from ../shared/data, never copied).

It knows the functions geoweave's ``earthengine`` source uses: loading, date and property
filters, ``map`` with a function, band selection and masks (SCL, QA60), median and mosaic
composites, ``unmask``, casts, ``resample`` and the band / projection queries. Pixels are
warped with GDAL onto the requested grid as Earth Engine does: nearest neighbour unless the
image was resampled, the mean when the grid is coarser than the image (its pyramid).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.warp import reproject

from tests.conftest import HELSINKI

S2_FILE = HELSINKI / "S2B_RGBNIR_20210926_Seurasaari.tif"
COLLECTION = "COPERNICUS/S2_SR_HARMONIZED"
CLEAR = "20210926T094029_20210926T094336_T35VLG"
CLOUDY = "20210916T094029_20210916T094650_T35VLG"
CLOUD_ROWS = (0.2, 0.6)  # the cloudy image's cloud: these rows (fractions of the height)
CLOUD_VALUE = 8000  # its reflectance in every band

Pixels = tuple[np.ndarray, np.ndarray]  # (bands, H, W) float64 data, same-shape bool mask


class EvalError(Exception):
    """An expression the stand-in cannot run: answered as HTTP 400, like Earth Engine."""


@dataclass
class Grid:
    width: int
    height: int
    transform: Affine
    crs: str

    @classmethod
    def of(cls, g: dict[str, Any]) -> Grid:
        t = g["affineTransform"]
        aff = Affine(t["scaleX"], t.get("shearX", 0), t["translateX"],
                     t.get("shearY", 0), t["scaleY"], t["translateY"])  # fmt: skip
        return cls(g["dimensions"]["width"], g["dimensions"]["height"], aff, g["crsCode"])


@dataclass
class Img:
    """An image: band names, metadata, and how to compute its pixels (lazily). An image of the
    collection computes at its own grid (``to_grid`` warps it onto the request's, with its
    ``resampling``): masks apply at full resolution, as in Earth Engine; a composite computes
    on the request's grid."""

    names: list[str]
    load: Callable[[], Pixels]
    props: dict[str, Any] = field(default_factory=dict)
    scale: float = 10.0
    crs: str = "EPSG:4326"
    dtype: str = "float64"
    to_grid: Callable[[Pixels, str], Pixels] | None = None
    resampling: str = "nearest"

    def like(self, load: Callable[[], Pixels], **changes: Any) -> Img:
        """This image's metadata with other pixels."""
        return replace(self, load=load, **changes)

    def on_grid(self) -> Pixels:
        """The pixels on the request's grid."""
        px = self.load()
        return self.to_grid(px, self.resampling) if self.to_grid else px


def _native() -> tuple[dict[str, dict[str, np.ndarray]], Affine, str]:
    """The catalogue's pixels at their own grid: the real clear scene (with an SCL band and a
    QA60 band derived from it) and a cloudy copy (a band of cloud, SCL 9, QA60 bit 10)."""
    with rasterio.open(S2_FILE) as ds:
        raw, transform, crs = ds.read().astype(np.float64), ds.transform, ds.crs.to_string()
    island = (raw != 0).any(axis=0)
    clear = {b: raw[i] for i, b in enumerate(["B2", "B3", "B4", "B8"])}
    clear["SCL"] = np.where(island, 4.0, 0.0)  # 4: vegetation
    clear["QA60"] = np.zeros_like(raw[0])
    cloudy = {b: v.copy() for b, v in clear.items()}
    h = raw.shape[1]
    r0, r1 = int(h * CLOUD_ROWS[0]), int(h * CLOUD_ROWS[1])
    for b in ("B2", "B3", "B4", "B8"):
        cloudy[b][r0:r1][island[r0:r1]] = CLOUD_VALUE
    cloudy["SCL"][r0:r1][island[r0:r1]] = 9.0
    cloudy["QA60"][r0:r1][island[r0:r1]] = 1024.0
    return {CLEAR: clear, CLOUDY: cloudy}, transform, crs


class Catalogue:
    """The stand-in's collections; images in load order (``mosaic`` puts the last on top)."""

    def __init__(self) -> None:
        self.pixels, self.transform, self.crs = _native()
        self.images = {COLLECTION: [  # id, acquisition, cloudy pixel percentage
            (CLOUDY, dt.datetime(2021, 9, 16, 9, 40, tzinfo=dt.timezone.utc), 35.0),
            (CLEAR, dt.datetime(2021, 9, 26, 9, 40, tzinfo=dt.timezone.utc), 2.0),
        ]}  # fmt: skip

    def load(self, collection: str, grid: Grid | None) -> list[Img]:
        if collection not in self.images:
            raise EvalError(
                f"ImageCollection.load: ImageCollection asset '{collection}' not found."
            )
        out = []
        for image_id, when, cloud in self.images[collection]:
            props = {"system:index": image_id, "system:time_start": when.timestamp() * 1000,
                     "CLOUDY_PIXEL_PERCENTAGE": cloud}  # fmt: skip
            bands = self.pixels[image_id]
            data = np.stack(list(bands.values()))
            mask = np.broadcast_to((data[:4] != 0).any(axis=0), data.shape)
            out.append(Img(list(bands), _fixed(data, mask), props, 10.0, self.crs, "uint16",
                           None if grid is None else self._warper(grid)))  # fmt: skip
        return out

    def _warper(self, grid: Grid) -> Callable[[Pixels, str], Pixels]:
        return lambda px, mode: self.warp(px, grid, mode)

    def warp(self, px: Pixels, grid: Grid, mode: str) -> Pixels:
        """Native pixels onto ``grid``: the mean when the grid is coarser (a pyramid level),
        else ``mode``; masked pixels take no part; the mask by nearest neighbour."""
        src, mask = px
        coarser = abs(grid.transform.a) > abs(self.transform.a) * 1.001
        how = Resampling.average if coarser else Resampling[mode]
        out = np.zeros((src.shape[0], grid.height, grid.width))
        ok = np.zeros(out.shape, np.uint8)
        common = {"src_transform": self.transform, "src_crs": self.crs,
                  "dst_transform": grid.transform, "dst_crs": grid.crs}  # fmt: skip
        reproject(np.where(mask, src, 0), out, src_nodata=0, dst_nodata=0, resampling=how, **common)
        reproject(
            mask.astype(np.uint8), ok, src_nodata=None, resampling=Resampling.nearest, **common
        )
        return out, ok > 0


def _fixed(data: np.ndarray, mask: np.ndarray) -> Callable[[], Pixels]:
    return lambda: (data, mask)


def _ms(day: str) -> float:
    return dt.datetime.fromisoformat(day).replace(tzinfo=dt.timezone.utc).timestamp() * 1000


def _binary(op: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Callable[..., Img]:
    def run(image1: Img, image2: Img) -> Img:
        def load() -> Pixels:
            (d1, m1), (d2, m2) = image1.load(), image2.load()
            return op(d1, d2).astype(np.float64), m1 & m2

        return image1.like(load, names=image1.names[:1])

    return run


def _constant(value: float) -> Img:
    return Img(["constant"], lambda: (np.full((1, 1, 1), float(value)), np.ones((1, 1, 1), bool)))


def _select(input: Img, bandSelectors: list[str], **_: Any) -> Img:  # Earth Engine's argument names
    missing = [b for b in bandSelectors if b not in input.names]
    if missing:
        raise EvalError(f"Image.select: Pattern '{missing[0]}' did not match any bands.")
    idx = [input.names.index(b) for b in bandSelectors]

    def load() -> Pixels:
        d, m = input.load()
        return d[idx], m[idx]

    return input.like(load, names=list(bandSelectors))


def _update_mask(image: Img, mask: Img) -> Img:
    def load() -> Pixels:
        (d, m), (md, mm) = image.load(), mask.load()
        return d, m & (md != 0) & mm

    return image.like(load)


def _unmask(input: Img, value: Img | None = None, sameFootprint: bool = True) -> Img:
    fill = 0.0 if value is None else float(value.load()[0].flat[0])

    def load() -> Pixels:
        d, m = input.load()
        return np.where(m, d, fill), np.ones_like(m)

    return input.like(load)


def _reduce(collection: list[Img], how: str) -> Img:
    """A composite on the request's grid: each image warped there, then the per-pixel median
    of the valid ones, or the last valid one (``mosaic``)."""
    if not collection:
        return Img([], lambda: (np.zeros((0, 1, 1)), np.zeros((0, 1, 1), bool)))

    def load() -> Pixels:
        parts = [i.on_grid() for i in collection]
        d = np.stack([p[0] for p in parts])
        m = np.stack([np.broadcast_to(p[1], p[0].shape) for p in parts])
        if how == "mosaic":
            out = np.zeros(d.shape[1:])
            for k in range(len(parts)):
                out = np.where(m[k], d[k], out)
            return out, np.asarray(m.any(axis=0))
        covered = np.asarray(m.any(axis=0))
        use = m.copy()
        use[0][~covered] = True  # a pixel no image covers: the first image's 0, masked below
        return np.asarray(np.nanmedian(np.where(use, d, np.nan), axis=0)), covered

    dtype = collection[0].dtype if how == "mosaic" else "float64"
    return collection[0].like(load, props={}, dtype=dtype, to_grid=None)


def _cast(dtype: str) -> Callable[..., Img]:
    return lambda value: value.like(value.load, dtype=dtype)


def _resample(image: Img, mode: str = "bilinear") -> Img:
    return image.like(image.load, resampling=mode)


def _filter_date(
    leftValue: tuple[float, float], rightField: str
) -> Callable[[dict[str, Any]], bool]:
    start, end = leftValue
    return lambda p: start <= p[rightField] < end


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "Collection.filter": lambda collection, filter: [i for i in collection if filter(i.props)],
    "Collection.size": lambda collection: len(collection),
    "Collection.first": lambda collection: collection[0] if collection else None,
    "DateRange": lambda start, end=None: (_ms(start), _ms(end) if end else float("inf")),
    "Filter.dateRangeContains": _filter_date,
    "Filter.greaterThan": lambda leftField, rightValue: lambda p: p[leftField] > rightValue,
    "Filter.lessThan": lambda leftField, rightValue: lambda p: p[leftField] < rightValue,
    "Filter.not": lambda filter: lambda p: not filter(p),
    "Image.bandNames": lambda image: image.names,
    "Image.projection": lambda image: {"crs": image.crs, "scale": image.scale},
    "Projection.nominalScale": lambda proj: proj["scale"],
    "Projection.crs": lambda projection: projection["crs"],
    "Image.select": _select,
    "Image.updateMask": _update_mask,
    "Image.unmask": _unmask,
    "Image.constant": _constant,
    "Image.neq": _binary(np.not_equal),
    "Image.eq": _binary(np.equal),
    "Image.and": _binary(lambda a, b: (a != 0) & (b != 0)),
    "Image.bitwiseAnd": _binary(lambda a, b: a.astype(np.int64) & b.astype(np.int64)),
    "Image.resample": _resample,
    "reduce.median": lambda collection: _reduce(collection, "median"),
    "ImageCollection.mosaic": lambda collection: _reduce(collection, "mosaic"),
    "Image.toUint8": _cast("uint8"),
    "Image.toUint16": _cast("uint16"),
    "Image.toInt16": _cast("int16"),
    "Image.toFloat": _cast("float32"),
}


class Evaluator:
    """Runs one serialized expression (``{"result": key, "values": {key: node}}``)."""

    def __init__(self, catalogue: Catalogue, expression: dict[str, Any], grid: Grid | None) -> None:
        self.catalogue, self.values, self.grid = catalogue, expression["values"], grid
        self.result = expression["result"]

    def run(self) -> Any:
        return self.node(self.values[self.result], {})

    def node(self, n: dict[str, Any], env: dict[str, Any]) -> Any:
        if "constantValue" in n:
            return n["constantValue"]
        if "valueReference" in n:
            return self.node(self.values[n["valueReference"]], env)
        if "argumentReference" in n:
            return env[n["argumentReference"]]
        if "dictionaryValue" in n:
            return {k: self.node(v, env) for k, v in n["dictionaryValue"]["values"].items()}
        if "arrayValue" in n:
            return [self.node(v, env) for v in n["arrayValue"]["values"]]
        if "functionDefinitionValue" in n:
            return n["functionDefinitionValue"]
        call = n["functionInvocationValue"]
        return self.call(call["functionName"], call.get("arguments", {}), env)

    def call(self, name: str, raw: dict[str, Any], env: dict[str, Any]) -> Any:
        if name == "Collection.map":
            fn = self.node(raw["baseAlgorithm"], env)
            arg = fn["argumentNames"][0]
            body = self.values[fn["body"]]
            return [self.node(body, {**env, arg: img}) for img in self.node(raw["collection"], env)]
        args = {k: self.node(v, env) for k, v in raw.items()}
        if name == "ImageCollection.load":
            return self.catalogue.load(args["id"], self.grid)
        if name not in FUNCTIONS:
            raise EvalError(f"the stand-in does not know {name}")
        return FUNCTIONS[name](**args)
