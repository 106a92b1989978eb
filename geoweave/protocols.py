"""The seams of the pipeline: one small protocol per component family (STYLE.md 14).

``builders/`` depends on these protocols only; a registry (``geoweave.registry``) maps the
names a recipe uses to implementations. Each protocol has one method that does the work.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal, Protocol

import numpy as np

from geoweave.record import Caption, LabelElement, QAPair, Sample, is_upsampled
from geoweave.tile import BBox, Tile

if TYPE_CHECKING:
    import duckdb
    import geopandas as gpd
    import pyarrow as pa
    from shapely.geometry.base import BaseGeometry


@dataclass(slots=True)
class TileImage:
    """The pixels of one tile on its grid, and where they came from."""

    data: np.ndarray  # (bands, H, W) in the source dtype; nodata pixels are 0
    valid: np.ndarray  # (H, W) bool
    rgb: np.ndarray  # (H, W, 3) uint8 for the JPEG
    item_id: str | None = None  # the file, scene or STAC item the pixels came from
    acquired: str | None = None  # ISO 8601, when the source knows it
    collection: str | None = None  # the STAC collection of the item
    href: str | None = None  # the asset the pixels were read from (a URL or a path)

    @property
    def nodata_fraction(self) -> float:
        return nodata_share(self.valid)


def nodata_share(valid: np.ndarray) -> float:
    """The share of False in a validity mask (``1 - valid.mean()``, 7x faster; 1.0 when
    empty)."""
    return 1.0 - np.count_nonzero(valid) / valid.size if valid.size else 1.0


class ImagerySource(Protocol):
    """Pixels for tiles. Plan time: which item covers each tile; read time: the pixels."""

    name: str
    crs: str
    res_m: float  # ground resolution in metres (decides average vs bilinear resampling)
    license: str

    def footprint(self) -> BaseGeometry:
        """The area with imagery, in lon/lat (the default area of a recipe)."""
        ...

    def plan(self, tiles: Sequence[Tile]) -> list[str | None]:
        """Per tile, the item that will be read for it, or None when nothing covers it.

        Runs once at plan time on the driver; must not read pixels.
        """
        ...

    def read(self, tiles: Sequence[Tile]) -> list[TileImage | Exception]:
        """The pixels of a batch of tiles (one shard, all of one GSD); an exception in place of
        a tile that could not be read, so one bad tile does not fail the others."""
        ...


class LabelSource(Protocol):
    """Label features (OSM, vector files) for a lon/lat box; see ``geoweave.sources.labels``.

    A source may set ``fixed_features = True`` when a feature id always comes back with the same
    tags and geometry (not clipped to the box asked for): the join then cleans and reprojects
    each feature once per worker instead of once per shard."""

    name: str

    def query(self, bbox: BBox) -> gpd.GeoDataFrame:
        """The features whose geometry intersects ``bbox`` (west, south, east, north)."""
        ...


class ClassRaster(Protocol):
    """A land-cover style class map: class fractions of each tile's valid pixels."""

    name: str

    def fractions(self, tiles: Sequence[Tile]) -> list[tuple[dict[str, float], float] | Exception]:
        """Per tile, (class name -> fraction of valid pixels, valid fraction)."""
        ...


@dataclass(frozen=True, slots=True)
class TileDescription:
    """What a text generator may know about a tile: rendered from its joined labels only, so a
    generator cannot mention anything the labels do not hold."""

    key: str
    gsd_m: float
    size_px: int
    elements: tuple[LabelElement, ...] = ()
    landcover: dict[str, float] = field(default_factory=dict)
    native_gsd_m: float | None = None  # the imagery's own resolution, when known

    @property
    def resolution_m(self) -> float:
        """The resolution the pixels really have: the tile GSD, or the imagery's own when the
        tile is upsampled from coarser imagery (a text must not claim detail that is not there)."""
        return max(self.gsd_m, self.native_gsd_m or 0.0) if self.upsampled else self.gsd_m

    @property
    def upsampled(self) -> bool:
        return is_upsampled(self.gsd_m, self.native_gsd_m)

    @classmethod
    def of(cls, sample: Sample) -> TileDescription:
        t = sample.tile
        return cls(
            t.key, t.gsd_m, t.size_px, tuple(sample.osm), dict(sample.landcover),
            sample.native_gsd_m,
        )  # fmt: skip


class Captioner(Protocol):
    """Captions for a batch of tiles (a batch lets an LLM backend send requests concurrently)."""

    name: str

    def caption(self, batch: Sequence[TileDescription]) -> list[list[Caption] | Exception]:
        """Per tile, its captions (none: nothing describable), or the exception that stopped it."""
        ...


class QuestionGenerator(Protocol):
    """Question-answer pairs for a batch of tiles."""

    name: str

    def questions(self, batch: Sequence[TileDescription]) -> list[list[QAPair] | Exception]: ...


class Filter(Protocol):
    """Keep a sample (None) or give the reason to reject it; record the score in ``scores``.

    ``stage`` is ``image`` (runs after pixels and labels, before any text) or ``text`` (after
    captions and questions).
    """

    name: str
    stage: ClassVar[Literal["image", "text"]]

    def check(self, sample: Sample) -> str | None: ...


@dataclass(frozen=True)
class PassInput:
    """What a corpus pass reads: the shard sidecars of a build (never the tars).

    ``rows``, when set, is a DuckDB connection whose table ``samples`` holds exactly the rows
    of ``sidecars`` (the manifest's, loaded while the shards ran): ``sidecar_connection`` in
    ``manifests/passes.py`` reads it instead of the files. A pass must not change it."""

    out_dir: Path
    name: str
    sidecars: tuple[str, ...]
    rows: duckdb.DuckDBPyConnection | None = field(default=None, compare=False, repr=False)


class CorpusPass(Protocol):
    """A pass over the whole corpus after the shards; its result is an overlay table. The
    passes of a build may run at once, each on a thread of its own: a pass reads the sidecars
    (``PassInput``) only, never another pass's table."""

    name: str

    def run(self, inputs: PassInput) -> pa.Table:
        """The overlay table (written as ``_passes/{name}.parquet`` and loaded into the
        manifest as table ``{name}``)."""
        ...
