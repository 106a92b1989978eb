"""The one sample record that flows from read to join to captions to filters to writers.

Its output fields are declared once, in ``COLUMNS``: the WebDataset JSON, the Arrow schemas of
the sidecar and the Parquet shard, and the manifest's ``samples`` table are all derived from
that list, so a new field is one line here (STYLE.md 13).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NotRequired, TypedDict, get_type_hints

import numpy as np
import orjson
import pyarrow as pa

from geoweave.text import plain_error
from geoweave.tile import Tile

OSM_LICENSE = "© OpenStreetMap contributors, ODbL 1.0"
KEPT, REJECTED = "kept", "rejected"  # a sample's status; "failed" is set by the manifest
UPSAMPLING_TOLERANCE = 0.95  # a GSD below 95% of the imagery's resolution is upsampling


def is_upsampled(gsd_m: float, native_gsd_m: float | None) -> bool:
    return native_gsd_m is not None and gsd_m < native_gsd_m * UPSAMPLING_TOLERANCE


class LabelElement(TypedDict):
    """A visible label feature of a tile (the join's output)."""

    id: str
    source: str
    tags: dict[str, str]
    geom_type: str
    coverage_px: float
    coverage_frac: float
    area_m2: float
    length_m: float
    position: str
    clipped: bool


class Caption(TypedDict):
    text: str
    style: str
    captioner: str
    prompt_version: str
    model: NotRequired[str]  # an LLM captioner's model
    params: NotRequired[str]  # its generation parameters, as JSON
    # set by the faithfulness_v1 filter (qa/faithfulness.py); absent (null) without it
    precision: NotRequired[float]  # supported mentions / mentions
    recall: NotRequired[float]  # visible labels mentioned / visible labels
    unsupported: NotRequired[list[str]]  # mentions the labels do not support
    faithful: NotRequired[bool]  # precision >= the filter's min_precision
    note: NotRequired[str]  # why a fallback was used, say


class QAPair(TypedDict):
    question: str
    answer: str
    kind: str
    verified: bool
    generator: NotRequired[str]  # an LLM generator's name, prompt version and model
    prompt_version: NotRequired[str]
    model: NotRequired[str]
    note: NotRequired[str]  # why a fallback was used, say
    check: NotRequired[str]  # qa_check_v1: presence, count, land_cover or unchecked


@dataclass(slots=True)
class Sample:
    """A tile on its way through the pipeline; stages fill in fields, none invents another."""

    tile: Tile
    source_license: str = ""
    label_licenses: dict[str, str] = field(default_factory=dict)  # vector source -> licence
    acquired: str | None = None
    item_id: str | None = None
    collection: str | None = None  # the STAC collection of the item
    asset_href: str | None = None  # the asset the pixels were read from
    native_gsd_m: float | None = None  # the imagery's own ground resolution
    upsampled: bool = False  # the tile GSD is finer than the imagery's (pixels interpolated)
    osm_snapshot: str | None = None
    data: np.ndarray | None = None  # (bands, H, W), the source dtype; nodata pixels are 0
    valid: np.ndarray | None = None  # (H, W) bool
    rgb: np.ndarray | None = None  # (H, W, 3) uint8
    pixel_cache: dict[str, np.ndarray | None] = field(default_factory=dict)  # shared stats
    bands_tif: bytes | None = None
    jpeg: bytes | None = None
    nodata_fraction: float = 0.0
    phash: int | None = None  # perceptual hashes of the image (qa/image_hash.py)
    dhash: int | None = None
    osm: list[LabelElement] = field(default_factory=list)
    landcover: dict[str, float] = field(default_factory=dict)
    landcover_date: str | None = None  # the ``labels.landcover.by_date`` raster used, if any
    captions: list[Caption] = field(default_factory=list)
    qa: list[QAPair] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)
    status: str = KEPT
    reject_reason: str | None = None
    rejected_by: str | None = None
    error: str | None = None

    @property
    def key(self) -> str:
        return self.tile.key

    @property
    def kept(self) -> bool:
        return self.status == KEPT

    def reject(self, reason: str, by: str | None = None) -> None:
        """Reject the sample; ``by`` is the versioned name of the stage or filter that did."""
        self.status, self.reject_reason, self.rejected_by = REJECTED, reason, by

    def fail(self, stage: str, exc: BaseException) -> None:
        """Reject the sample for an exception in one of its stages (per-tile fault isolation)."""
        self.reject("error", by=stage)
        self.error = plain_error(exc)
        self.jpeg = self.bands_tif = None

    def drop_pixels(self) -> None:
        """Free the arrays once the image is encoded (a shard holds many samples)."""
        self.data = self.valid = self.rgb = None
        self.pixel_cache = {}

    @property
    def license(self) -> str:
        """The imagery licence plus the licence of each label source the sample uses."""
        parts = [self.source_license] if self.source_license else []
        for source in dict.fromkeys(e["source"] for e in self.osm):
            lic = OSM_LICENSE if source == "osm" else self.label_licenses.get(source)
            if lic and lic not in parts:
                parts.append(lic)
        return "; ".join(parts)

    def metadata(self) -> dict[str, Any]:
        """Everything but pixels: the JSON of a WebDataset sample and the sidecar row."""
        return {c.name: c.get(self) for c in COLUMNS}


# ---- the field list and the views derived from it -------------------------------------------

_SCALARS: dict[Any, pa.DataType] = {
    str: pa.string(),
    int: pa.int32(),
    float: pa.float64(),
    bool: pa.bool_(),
}


def _str_map(mapping: bool) -> pa.DataType:
    return pa.map_(pa.string(), pa.string()) if mapping else pa.string()


def _float_map(mapping: bool) -> pa.DataType:
    return pa.map_(pa.string(), pa.float64()) if mapping else pa.string()


def struct_of(typed: type, mapping: bool) -> pa.DataType:
    """The Arrow struct of a TypedDict; ``dict[str, str]`` fields become maps (or JSON text)."""
    fields = []
    for name, hint in get_type_hints(typed).items():
        if hint in _SCALARS:
            fields.append((name, _SCALARS[hint]))
        elif hint == list[str]:
            fields.append((name, pa.list_(pa.string())))
        else:
            fields.append((name, _str_map(mapping)))
    return pa.struct(fields)


def _bbox(s: Sample) -> dict[str, float]:
    w, so, e, n = s.tile.bbox_lonlat()
    return {"west": w, "south": so, "east": e, "north": n}


def _transform(tile: Tile) -> list[float]:
    """The six numbers of ``tile.transform``, without building the ``Affine`` (4 us a tile)."""
    minx, _, _, maxy = tile.bounds
    return [float(tile.gsd_m), 0.0, float(minx), 0.0, -float(tile.gsd_m), float(maxy)]


def _osm_ids(s: Sample) -> list[str]:
    return [el["id"] for el in s.osm if el["source"] == "osm"]


@dataclass(frozen=True)
class Column:
    """One output field: its name, its Arrow type (maps as Arrow maps or as JSON text), and how
    to read it off a sample."""

    name: str
    arrow: Callable[[bool], pa.DataType]
    get: Callable[[Sample], Any]
    json_map: bool = False  # a Python dict stored as an Arrow map or as JSON text


def _fixed(t: pa.DataType) -> Callable[[bool], pa.DataType]:
    return lambda _mapping: t


COLUMNS: tuple[Column, ...] = (
    Column("key", _fixed(pa.string()), lambda s: s.key),
    Column("shard", _fixed(pa.int32()), lambda s: s.tile.shard),
    Column("status", _fixed(pa.string()), lambda s: s.status),
    Column("reject_reason", _fixed(pa.string()), lambda s: s.reject_reason),
    Column("rejected_by", _fixed(pa.string()), lambda s: s.rejected_by),
    Column("error", _fixed(pa.string()), lambda s: s.error),
    Column("source", _fixed(pa.string()), lambda s: s.tile.source),
    Column("item_id", _fixed(pa.string()), lambda s: s.item_id),
    Column("acquired", _fixed(pa.string()), lambda s: s.acquired),
    Column("collection", _fixed(pa.string()), lambda s: s.collection),
    Column("asset_href", _fixed(pa.string()), lambda s: s.asset_href),
    Column("crs", _fixed(pa.string()), lambda s: s.tile.crs),
    Column("transform", _fixed(pa.list_(pa.float64())), lambda s: _transform(s.tile)),
    Column("gsd_m", _fixed(pa.float64()), lambda s: s.tile.gsd_m),
    Column("size_px", _fixed(pa.int32()), lambda s: s.tile.size_px),
    Column("native_gsd_m", _fixed(pa.float64()), lambda s: s.native_gsd_m),
    Column("upsampled", _fixed(pa.bool_()), lambda s: s.upsampled),
    Column("split", _fixed(pa.string()), lambda s: s.tile.split),
    Column("cell", _fixed(pa.string()), lambda s: s.tile.cell),
    Column(
        "bbox",
        _fixed(pa.struct([(k, pa.float64()) for k in ("west", "south", "east", "north")])),
        _bbox,
    ),
    Column("osm_ids", _fixed(pa.list_(pa.string())), _osm_ids),
    Column("osm_snapshot", _fixed(pa.string()), lambda s: s.osm_snapshot if _osm_ids(s) else None),
    Column("osm", lambda m: pa.list_(struct_of(LabelElement, m)), lambda s: s.osm),
    Column("landcover", _float_map, lambda s: s.landcover, json_map=True),
    Column("landcover_date", _fixed(pa.string()), lambda s: s.landcover_date),
    Column("captions", lambda m: pa.list_(struct_of(Caption, m)), lambda s: s.captions),
    Column("qa", lambda m: pa.list_(struct_of(QAPair, m)), lambda s: s.qa),
    Column("scores", _float_map, lambda s: s.scores, json_map=True),
    Column("phash", _fixed(pa.int64()), lambda s: s.phash),
    Column("dhash", _fixed(pa.int64()), lambda s: s.dhash),
    Column("license", _fixed(pa.string()), lambda s: s.license),
    Column("caption", _fixed(pa.string()), lambda s: s.captions[0]["text"] if s.captions else None),
)


def schema(mapping: bool, images: bool = False) -> pa.Schema:
    """The Arrow schema of sample rows; ``images`` adds the ``jpg`` and ``tif`` columns."""
    fields = [(c.name, c.arrow(mapping)) for c in COLUMNS]
    if images:
        fields += [("jpg", pa.binary()), ("tif", pa.binary())]
    return pa.schema(fields)


# The sidecar feeds DuckDB, which queries maps well (tags['building']); the Parquet shard is
# read by Hugging Face `datasets`, which has no map type, so its maps are JSON strings.
SIDECAR_SCHEMA = schema(mapping=True)
PARQUET_SCHEMA = schema(mapping=False, images=True)


_JSON_MAPS = frozenset(c.name for c in COLUMNS if c.json_map)


# Compact (as the WebDataset JSON), keys sorted: orjson writes a 10-class land-cover map in
# 1 us, json.dumps in 10 (4 ms of a 256-tile shard's Parquet); a NaN becomes null.
_JSON_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def _json(mapping: dict[str, Any]) -> str:
    return orjson.dumps(mapping, option=_JSON_OPTIONS).decode()


def _column(name: str, values: list[Any], mapping: bool) -> list[Any]:
    """One column's values as Arrow takes them: Python dicts become Arrow maps as they are,
    or JSON text (the ``osm`` elements' tags too)."""
    if mapping:
        return values
    if name == "osm":
        return [[{**e, "tags": _json(e["tags"])} for e in elements] for elements in values]
    return [_json(v) for v in values] if name in _JSON_MAPS else values


def parquet_table(sidecar: pa.Table, rows: list[dict[str, Any]], kept: list[bool],
                  images: list[tuple[bytes | None, bytes | None]]) -> pa.Table:  # fmt: skip
    """The Parquet shard's table: the ``kept`` rows of ``sidecar`` (``to_table(rows,
    SIDECAR_SCHEMA)``), the columns that are maps there as JSON text, then each kept row's
    ``images`` (JPEG, GeoTIFF). Equal to ``to_table`` of the kept rows with their images in
    half its time: only the JSON columns are converted again."""
    picked = [r for r, k in zip(rows, kept, strict=True) if k]
    base = sidecar.filter(pa.array(kept, pa.bool_()))
    again = {name: [r.get(name) for r in picked] for name in (*_JSON_MAPS, "osm")}
    again |= {"jpg": [jpg for jpg, _ in images], "tif": [tif for _, tif in images]}
    columns = [
        pa.array(_column(f.name, again[f.name], False), f.type)
        if f.name in again
        else base.column(f.name)
        for f in PARQUET_SCHEMA
    ]
    return pa.Table.from_arrays(columns, schema=PARQUET_SCHEMA)


def to_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Sample metadata dicts (plus image columns for the Parquet shard) to a typed table,
    column by column (a third faster than Arrow's row by row ``from_pylist``)."""
    mapping = pa.types.is_map(schema.field("landcover").type)
    columns = {f.name: _column(f.name, [r.get(f.name) for r in rows], mapping) for f in schema}
    return pa.Table.from_pydict(columns, schema=schema)
