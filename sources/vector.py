"""Vector label files (GeoJSON, GeoParquet, GeoPackage, ...) as a label source.

The whole file is read once into memory with a spatial index, so this suits label files that fit
in one process (a city's buildings, a curated annotation layer); planet-scale OSM goes through
the partitioned OSM index instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict
from shapely.geometry import box

from geoweave.errors import FatalError
from geoweave.registry import LABEL_SOURCES
from geoweave.sources.labels import LABEL_COLUMNS, LABEL_CRS, BBox, empty_labels

if TYPE_CHECKING:  # pandas and geopandas take 0.3 s to import: only where a file is read
    import geopandas as gpd

PARQUET_SUFFIXES = (".parquet", ".geoparquet")
ID_COLUMNS = ("id", "osm_id")  # file columns that hold a feature id, in order of preference


def read_vector(path: Path) -> gpd.GeoDataFrame:
    """Read a vector file with geopandas, turning any read failure into a FatalError."""
    import geopandas as gpd

    if not path.is_file():
        raise FatalError(f"vector label file {path} not found")
    try:
        if path.suffix.lower() in PARQUET_SUFFIXES:
            return gpd.read_parquet(path)
        return gpd.read_file(path)
    except (OSError, ValueError, RuntimeError) as exc:
        raise FatalError(
            f"cannot read vector label file {path}: {exc}; "
            "give a GeoJSON, GeoPackage or GeoParquet file"
        ) from None


def _text(value: Any) -> str | None:
    """A tag value as text; None for nulls. Whole floats lose their ``.0``."""
    import pandas as pd

    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    return str(value)


class VectorOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path
    tag_columns: list[str] | None = None


@LABEL_SOURCES.add("vector")
class VectorLabelSource:
    """Features of a vector file as labels: ``id``, ``tags`` (its attributes) and ``geometry``."""

    Options = VectorOptions

    @classmethod
    def from_options(cls, opts: VectorOptions, name: str | None = None) -> VectorLabelSource:
        """The source of a ``labels.sources`` entry of type ``vector``."""
        return cls(opts.path, name, opts.tag_columns)

    def __init__(
        self,
        path: str | Path,
        name: str | None = None,
        tag_columns: Sequence[str] | None = None,
    ) -> None:
        """Read the file, reproject it to lon/lat and index it.

        Args:
            path: a GeoJSON, GeoPackage, GeoParquet (``.parquet``/``.geoparquet``) or other
                file that geopandas reads.
            name: the source name, prefix of every feature id; defaults to the file stem.
            tag_columns: the attribute columns to keep as tags; default all of them.

        Raises:
            FatalError: the file is unreadable, has no features with a geometry, has no CRS,
                or lacks one of ``tag_columns``.
        """
        self.path = Path(path)
        self.name = name or self.path.stem
        frame = read_vector(self.path)
        if frame.crs is None:
            raise FatalError(
                f"vector label file {self.path} has no CRS; set the one its coordinates are in, "
                f"e.g. `ogr2ogr -a_srs EPSG:4326 fixed.gpkg {self.path}`"
            )
        self.labels = self._to_labels(frame, tag_columns)
        # Read once, so an id always comes with the same tags and geometry, unless the file's
        # id column repeats a value: only then may the join keep features by id.
        self.fixed_features = bool(self.labels["id"].is_unique)

    def _to_labels(
        self, frame: gpd.GeoDataFrame, tag_columns: Sequence[str] | None
    ) -> gpd.GeoDataFrame:
        """Build the ``id, tags, geometry`` frame in EPSG:4326 from the file's rows."""
        import geopandas as gpd

        id_column = next((c for c in ID_COLUMNS if c in frame.columns), None)
        columns = self._tag_columns(frame, tag_columns, id_column)
        ids = [
            f"{self.name}:{_text(value) or row}"
            for row, value in enumerate(frame[id_column] if id_column else range(len(frame)))
        ]
        tags = [
            {c: text for c in columns if (text := _text(record[c])) is not None}
            for record in frame[columns].to_dict("records")
        ]
        labels = gpd.GeoDataFrame(
            {"id": ids, "tags": tags}, geometry=frame.geometry.values, crs=frame.crs
        )
        labels = labels[labels.geometry.notna() & ~labels.geometry.is_empty]
        if labels.empty:
            raise FatalError(f"vector label file {self.path} has no features with a geometry")
        return labels.to_crs(LABEL_CRS).reset_index(drop=True)

    def _tag_columns(
        self, frame: gpd.GeoDataFrame, wanted: Sequence[str] | None, id_column: str | None
    ) -> list[str]:
        """The attribute columns that become tags: ``wanted``, or all but geometry and id."""
        attributes = [c for c in frame.columns if c != frame.geometry.name]
        if wanted is None:
            return [c for c in attributes if c != id_column]
        missing = [c for c in wanted if c not in attributes]
        if missing:
            raise FatalError(
                f"vector label file {self.path} has no column(s) {', '.join(missing)}; "
                f"its columns are {', '.join(attributes)}"
            )
        return list(wanted)

    def query(self, bbox: BBox) -> gpd.GeoDataFrame:
        """Return the features whose geometry intersects ``bbox`` (west, south, east, north)."""
        rows = self.labels.sindex.query(box(*bbox), predicate="intersects")
        if len(rows) == 0:
            return empty_labels()
        found = self.labels.iloc[sorted(rows)]
        return found[list(LABEL_COLUMNS)].reset_index(drop=True)
