"""A static STAC catalogue with COG assets, made from the SF Bay Landsat sample (read from
../shared/data, never copied into the repository): three items of one collection.

- ``west-2001`` and ``east-2001``: the west and east halves (with an overlap), cloud cover 5%.
- ``west-1999``: the west half again, an earlier date, cloud cover 40% (brightened, so a test
  can tell which item a tile was read from).

Each asset is a Cloud-Optimised GeoTIFF (GDAL's COG driver: tiled, overviews). Hrefs are
relative, so the same folder works from disk and served over HTTP.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import rasterio
from rasterio.warp import transform_bounds
from rasterio.windows import Window

ITEMS = {  # id: (column range as fractions of the width, datetime, cloud cover, brightening)
    "west-2001": ((0.0, 0.6), "2001-06-01T18:30:00Z", 5.0, 0),
    "east-2001": ((0.4, 1.0), "2001-06-01T18:30:00Z", 5.0, 0),
    "west-1999": ((0.0, 0.6), "1999-07-15T18:30:00Z", 40.0, 40),
}
COLLECTION = "sfbay-landsat7"


def _cog(src: rasterio.DatasetReader, cols: tuple[float, float], add: int, path: Path) -> None:
    c0, c1 = int(src.width * cols[0]), int(src.width * cols[1])
    window = Window(c0, 0, c1 - c0, src.height)
    data = src.read(window=window).astype(np.int16) + add
    profile = {"driver": "COG", "width": c1 - c0, "height": src.height, "count": src.count,
               "dtype": "uint8", "crs": src.crs, "transform": src.window_transform(window),
               "blocksize": 128, "compress": "deflate"}  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.clip(data, 0, 255).astype(np.uint8))


def _item(item_id: str, path: Path, when: str, cloud: float) -> dict[str, object]:
    with rasterio.open(path) as ds:
        w, s, e, n = transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)
    ring = [[w, s], [e, s], [e, n], [w, n], [w, s]]
    return {
        "type": "Feature", "stac_version": "1.0.0", "id": item_id, "collection": COLLECTION,
        "geometry": {"type": "Polygon", "coordinates": [ring]}, "bbox": [w, s, e, n],
        "properties": {"datetime": when, "eo:cloud_cover": cloud},
        "links": [{"rel": "collection", "href": "../collection.json"},
                  {"rel": "parent", "href": "../collection.json"},
                  {"rel": "root", "href": "../catalog.json"}],
        "assets": {"visual": {"href": f"./{path.name}", "roles": ["data"],
                              "type": "image/tiff; application=geotiff; profile=cloud-optimized"}},
    }  # fmt: skip


def write_catalog(image: Path, out: Path) -> Path:
    """The catalogue under ``out``; returns the path of ``catalog.json``."""
    out.mkdir(parents=True, exist_ok=True)
    links = []
    with rasterio.open(image) as src:
        for item_id, (cols, when, cloud, add) in ITEMS.items():
            folder = out / "items"
            folder.mkdir(exist_ok=True)
            _cog(src, cols, add, folder / f"{item_id}.tif")
            item = _item(item_id, folder / f"{item_id}.tif", when, cloud)
            (folder / f"{item_id}.json").write_text(json.dumps(item))
            links.append({"rel": "item", "href": f"./items/{item_id}.json"})
    collection = {
        "type": "Collection", "stac_version": "1.0.0", "id": COLLECTION,
        "description": "SF Bay Landsat 7 halves (test fixture)", "license": "other",
        "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]},
                   "temporal": {"interval": [["1999-01-01T00:00:00Z", None]]}},
        "links": [*links, {"rel": "root", "href": "./catalog.json"},
                  {"rel": "parent", "href": "./catalog.json"}],
    }  # fmt: skip
    (out / "collection.json").write_text(json.dumps(collection))
    catalog = {
        "type": "Catalog", "stac_version": "1.0.0", "id": "geoweave-test",
        "description": "test catalogue",
        "links": [{"rel": "root", "href": "./catalog.json"},
                  {"rel": "child", "href": "./collection.json"}],
    }  # fmt: skip
    (out / "catalog.json").write_text(json.dumps(catalog))
    return out / "catalog.json"
