"""A label source from a recipe plugin: one feature covering whatever box is asked for."""

from __future__ import annotations

import geopandas as gpd
import shapely
from pydantic import BaseModel, ConfigDict

from geoweave.registry import LABEL_SOURCES
from geoweave.sources.labels import LABEL_CRS


@LABEL_SOURCES.add("box_test")
class BoxLabels:
    """Answers every query with its own box, tagged ``{key: value}`` (a stand-in for a real
    label service)."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)

        key: str = "landuse"
        value: str = "meadow"

    def __init__(self, opts: Options, name: str | None = None) -> None:
        self.name = name or "box"
        self.tags = {opts.key: opts.value}

    def query(self, bbox: tuple[float, float, float, float]) -> gpd.GeoDataFrame:
        return gpd.GeoDataFrame(
            {"id": [f"{self.name}:0"], "tags": [self.tags]},
            geometry=[shapely.box(*bbox)],
            crs=LABEL_CRS,
        )
