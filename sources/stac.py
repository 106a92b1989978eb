"""Imagery from a STAC catalogue (imagery type ``stac``): items chosen per tile at plan time,
COG windows read over HTTP (or from disk) with rasterio.

``catalog`` is a static catalogue (a ``catalog.json`` or ``collection.json``, a local path or
a URL: every item under it is walked with ``pystac``) or a STAC API root URL (searched with
``pystac-client`` by the area's box, ``datetime`` and ``collections``; the API's own paging).
Items are kept when they match ``collections``, the ``datetime`` range and
``max_cloud_cover`` (``eo:cloud_cover``). At plan time each tile gets, among the items whose
footprint covers its lon/lat box (else that meet it), the least cloudy one, then the newest,
then the smallest id: the choice is in the plan file and every sample records the item id,
its collection, its acquisition time and the asset href it was read from.

Each item's ``asset`` (a COG holding the bands) is read as a GeoTIFF: windows of one item
per shard batch, through GDAL's ``/vsicurl/`` for http(s) hrefs, which fetches byte ranges
and caches blocks (``GDAL_HTTP_MAX_RETRY``, ``GDAL_HTTP_TIMEOUT``, ``CPL_VSIL_CURL_CACHE_SIZE``
and the other GDAL settings apply; see README). A tile whose read fails (an HTTP error after
GDAL's retries, a stall) is rejected with the reason; the shard completes.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import rasterio
import shapely
from pydantic import BaseModel, ConfigDict, Field
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from geoweave.errors import FatalError
from geoweave.protocols import TileImage
from geoweave.registry import IMAGERY_SOURCES
from geoweave.sources.grid import bbox_geometry
from geoweave.sources.imagery import GeoTiffSource
from geoweave.tile import Tile


@dataclass(frozen=True)
class StacItem:
    id: str
    collection: str | None
    datetime: str | None
    cloud: float  # eo:cloud_cover, 0 when the item does not say
    href: str  # the asset's absolute href
    geometry: BaseGeometry  # lon/lat


# GDAL's HTTP settings for COG reads (each can be overridden by the environment variable of
# the same name): a timeout on every request, retries with a delay on 429/5xx, no directory
# listing probes, block cache per file.
GDAL_HTTP = {
    "GDAL_HTTP_TIMEOUT": "30",
    "GDAL_HTTP_MAX_RETRY": "3",
    "GDAL_HTTP_RETRY_DELAY": "0.5",
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
}


def gdal_env() -> rasterio.Env:
    return rasterio.Env(**{k: os.environ.get(k, v) for k, v in GDAL_HTTP.items()})


class _RemoteCOG(GeoTiffSource):
    """One item's asset: a GeoTIFF opened by href (``/vsicurl/`` for http(s)), opened and
    read under ``GDAL_HTTP``."""

    def __init__(self, name: str, href: str, **kw: Any) -> None:
        self.href = href
        with gdal_env():
            super().__init__(name, href.rsplit("/", 1)[-1], **kw)

    def _open(self) -> rasterio.DatasetReader:
        try:
            return rasterio.open(self.href)
        except rasterio.RasterioIOError as e:
            raise FatalError(f"STAC asset {self.href}: cannot be read ({e})") from None

    def read(self, tiles: Sequence[Tile]) -> list[TileImage | Exception]:
        with gdal_env():
            return super().read(tiles)


def _date_ok(when: str | None, start: str | None, end: str | None) -> bool:
    day = (when or "")[:10]
    return (not start or day >= start[:10]) and (not end or day <= end[:10])


def load_items(
    catalog: str, collections: list[str] | None, datetime: str | None, asset: str,
    max_cloud: float | None, bbox: tuple[float, float, float, float] | None = None,
) -> list[StacItem]:  # fmt: skip
    """The catalogue's items that match; FatalError naming the option when none can be read."""
    import pystac

    start, _, end = (datetime or "").partition("/")
    try:
        root = pystac.read_file(catalog)
    except Exception as e:  # a missing file, a URL that does not answer, not STAC JSON
        raise FatalError(
            f"imagery.catalog {catalog}: not a readable STAC catalogue ({e})"
        ) from None
    if isinstance(root, pystac.Catalog) and any(link.rel == "search" for link in root.links):
        raw = _search(catalog, collections, datetime, bbox)
    elif isinstance(root, pystac.Catalog):
        raw = list(root.get_items(recursive=True))
    else:
        raw = [root] if isinstance(root, pystac.Item) else []
    area = bbox_geometry(bbox) if bbox is not None else None
    out = []
    for it in raw:
        if area is not None and not shape(it.geometry).intersects(area):
            continue  # a static catalogue is walked whole; an API was asked for the box
        when = it.properties.get("datetime")
        cloud = float(it.properties.get("eo:cloud_cover") or 0.0)
        if collections and it.collection_id not in collections:
            continue
        if not _date_ok(when, start or None, end or None) or (
            max_cloud is not None and cloud > max_cloud
        ):
            continue
        if asset not in it.assets:
            raise FatalError(
                f"STAC item {it.id} has no asset {asset!r} (imagery.asset); it has {sorted(it.assets)}"
            )
        out.append(StacItem(it.id, it.collection_id, when, cloud,
                            it.assets[asset].get_absolute_href() or it.assets[asset].href,
                            shape(it.geometry)))  # fmt: skip
    if not out:
        raise FatalError(
            f"imagery.catalog {catalog}: no item matches collections, datetime, max_cloud_cover "
            "and the area"
        )
    return sorted(out, key=lambda i: i.id)


def _search(url: str, collections: list[str] | None, datetime: str | None, bbox: Any) -> list[Any]:
    from pystac_client import Client

    search = Client.open(url).search(collections=collections, datetime=datetime, bbox=bbox)
    return list(search.items())


@IMAGERY_SOURCES.add("stac")
class StacSource:
    class Options(BaseModel):
        """The ``stac`` options of a recipe's imagery section."""

        model_config = ConfigDict(extra="forbid", frozen=True)

        catalog: str = Field(description="a static catalog.json / collection.json, or an API URL")
        collections: list[str] | None = None
        datetime: str | None = Field(None, description="'2020-01-01/2020-12-31', either end open")
        max_cloud_cover: float | None = Field(None, ge=0, le=100)
        asset: str = Field("visual", description="the asset key of the COG to read")
        area_bbox: tuple[float, float, float, float] | None = Field(
            None, description="the search box (west, south, east, north); default: area.bbox"
        )
        choose: Literal["least_cloudy", "all_dates"] = Field(
            "least_cloudy",
            description="least_cloudy: one item per tile; all_dates: one sample per "
            "acquisition day over the tile (its least cloudy item that day)",
        )
        bands: list[int] = Field(default=[1, 2, 3])
        scale: Literal["auto", "none"] | tuple[float, float] = "auto"
        nodata: float | None = None

    def __init__(
        self, opts: Options, name: str, license: str = "see source", acquired: str | None = None
    ) -> None:
        self.name, self.opts, self.license = name, opts, license
        self.items = {i.id: i for i in load_items(opts.catalog, opts.collections, opts.datetime,
                                                  opts.asset, opts.max_cloud_cover,
                                                  opts.area_bbox)}  # fmt: skip
        first = self._reader(next(iter(self.items)))
        self.crs, self.res_m = first.crs, first.res_m
        self._tree = shapely.STRtree([i.geometry for i in self.items.values()])
        self._order = list(self.items.values())

    @classmethod
    def from_options(
        cls, opts: Options, name: str, license: str = "see source", acquired: str | None = None
    ) -> StacSource:
        return cls(opts, name, license, acquired)

    @functools.lru_cache(maxsize=64)  # noqa: B019 (one source per process; few items per shard)
    def _reader(self, item_id: str) -> _RemoteCOG:
        o = self.opts
        return _RemoteCOG(self.name, self.items[item_id].href, bands=o.bands, scale=o.scale,
                          nodata=o.nodata, license=self.license)  # fmt: skip

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_tree"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._tree = shapely.STRtree([i.geometry for i in self._order])

    def footprint(self) -> BaseGeometry:
        return shapely.union_all([i.geometry for i in self._order])

    @property
    def many_dates(self) -> bool:
        """Whether the planner asks ``plan_dates`` (several samples per cell) for this source."""
        return self.opts.choose == "all_dates"

    def plan(self, tiles: Sequence[Tile]) -> list[str | None]:
        """Per tile, the least cloudy, then newest item covering it (else meeting it)."""
        return [_best(c).id if c else None for c in self._candidates(tiles)]

    def plan_dates(self, tiles: Sequence[Tile]) -> list[list[tuple[str, str]]]:
        """Per tile, (item id, day ``YYYYMMDD``) for each acquisition day over it, oldest
        first: that day's least cloudy item covering it (else meeting it)."""
        out = []
        for candidates in self._candidates(tiles):
            by_day: dict[str, list[StacItem]] = {}
            for item in candidates:
                by_day.setdefault((item.datetime or "")[:10].replace("-", ""), []).append(item)
            out.append([(_best(items).id, day) for day, items in sorted(by_day.items())])
        return out

    def _candidates(self, tiles: Sequence[Tile]) -> list[list[StacItem]]:
        """Per tile, the items whose footprint covers its lon/lat box, else those meeting it."""
        b = np.array([t.bbox_lonlat() for t in tiles]).reshape(-1, 4)
        out = []
        for box in shapely.box(b[:, 0], b[:, 1], b[:, 2], b[:, 3]):
            hits = [self._order[j] for j in self._tree.query(box, predicate="intersects")]
            out.append([i for i in hits if i.geometry.covers(box)] or hits)
        return out

    def read(self, tiles: Sequence[Tile]) -> list[TileImage | Exception]:
        """Each item's tiles as one batch of its COG; the image records the item."""
        out: list[TileImage | Exception | None] = [None] * len(tiles)
        by_item: dict[str, list[int]] = {}
        for i, t in enumerate(tiles):
            by_item.setdefault(t.item or "", []).append(i)
        for item_id, idx in by_item.items():
            for i, img in zip(idx, self._read_item(item_id, [tiles[i] for i in idx]), strict=True):
                out[i] = img
        return [o if o is not None else RuntimeError("no image") for o in out]

    def _read_item(self, item_id: str, tiles: list[Tile]) -> list[TileImage | Exception]:
        item = self.items.get(item_id)
        if item is None:
            return [FatalError(f"STAC item {item_id!r} of the plan is not in the catalogue")] * len(
                tiles
            )
        try:
            images = self._reader(item_id).read(tiles)
        except Exception as e:  # the asset could not be opened: every tile of it fails
            return [e] * len(tiles)
        for img in images:
            if isinstance(img, TileImage):
                img.item_id, img.acquired = item.id, item.datetime
                img.collection, img.href = item.collection, item.href
        return images


def _best(items: list[StacItem]) -> StacItem:
    """The least cloudy, then the newest, then the smallest id."""
    return min(items, key=lambda i: (i.cloud, _neg(i.datetime), i.id))


def _neg(when: str | None) -> str:
    """A sort key putting newer datetimes first."""
    return "".join(chr(0x10FFFF - ord(c)) for c in (when or ""))
