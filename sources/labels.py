"""The contract every label source follows, so the join treats OSM and vector files alike.

A label source answers one question: which features touch this lon/lat box? It returns a
GeoDataFrame in EPSG:4326 with exactly the columns in ``LABEL_COLUMNS``:

- ``id`` (str): stable element id. OSM uses ``n123`` / ``w123`` / ``r123`` (original OSM
  ids; areas built from ways or multipolygon relations keep the way or relation id); vector
  files use ``{source name}:{row}``.
- ``tags`` (dict[str, str]): informative tags only (see ``DEFAULT_TAG_KEYS``).
- ``geometry``: shapely geometry in lon/lat.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # geopandas takes 0.3 s to import; a build without vector labels needs none
    import geopandas as gpd

LABEL_COLUMNS = ("id", "tags", "geometry")
LABEL_CRS = "EPSG:4326"

# Keys whose values describe what is visible from above (SkyScript keeps a similar list).
DEFAULT_TAG_KEYS = (
    "building",
    "landuse",
    "natural",
    "leisure",
    "amenity",
    "highway",
    "railway",
    "waterway",
    "water",
    "aeroway",
    "man_made",
    "power",
    "place",
    "surface",
    "sport",
    "crop",
    "wetland",
    "bridge",
    "parking",
    "tourism",
)

BBox = tuple[float, float, float, float]


class LabelSource(Protocol):
    """Anything that returns label features for a lon/lat bounding box."""

    name: str

    def query(self, bbox: BBox) -> gpd.GeoDataFrame:
        """Return the features whose geometry intersects ``bbox`` (west, south, east, north)."""
        ...


@functools.cache
def _empty() -> gpd.GeoDataFrame:
    import geopandas as gpd

    return gpd.GeoDataFrame({"id": [], "tags": []}, geometry=[], crs=LABEL_CRS)


def empty_labels() -> gpd.GeoDataFrame:
    """An empty frame with the label columns, for sources that have nothing in a box.

    A copy of one cached frame: building a GeoDataFrame costs ~0.5 ms, and most shards of a
    sparse area ask for empty boxes.
    """
    return _empty().copy()
