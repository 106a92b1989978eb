"""Arrow schemas of the shard files, and the conversion of sample metadata to Arrow rows.

One explicit schema keeps every shard's sidecar identical in type (an empty shard included), so
DuckDB can read all of them as one table.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

ELEMENT = pa.struct(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("tags", pa.map_(pa.string(), pa.string())),
        ("geom_type", pa.string()),
        ("coverage_px", pa.float64()),
        ("coverage_frac", pa.float64()),
        ("area_m2", pa.float64()),
        ("length_m", pa.float64()),
        ("position", pa.string()),
        ("clipped", pa.bool_()),
    ]
)
CAPTION = pa.struct(
    [
        ("text", pa.string()),
        ("style", pa.string()),
        ("captioner", pa.string()),
        ("prompt_version", pa.string()),
    ]
)
QA = pa.struct(
    [
        ("question", pa.string()),
        ("answer", pa.string()),
        ("kind", pa.string()),
        ("verified", pa.bool_()),
    ]
)
BBOX = pa.struct([(k, pa.float64()) for k in ("west", "south", "east", "north")])

SAMPLE_FIELDS = [
    ("key", pa.string()),
    ("shard", pa.int32()),
    ("status", pa.string()),
    ("reject_reason", pa.string()),
    ("source", pa.string()),
    ("acquired", pa.string()),
    ("crs", pa.string()),
    ("transform", pa.list_(pa.float64())),
    ("gsd_m", pa.float64()),
    ("size_px", pa.int32()),
    ("bbox", BBOX),
    ("osm_ids", pa.list_(pa.string())),
    ("osm", pa.list_(ELEMENT)),
    ("landcover", pa.map_(pa.string(), pa.float64())),
    ("captions", pa.list_(CAPTION)),
    ("qa", pa.list_(QA)),
    ("scores", pa.map_(pa.string(), pa.float64())),
    ("license", pa.string()),
    ("caption", pa.string()),
]
SIDECAR_SCHEMA = pa.schema(SAMPLE_FIELDS)
PARQUET_SCHEMA = pa.schema([*SAMPLE_FIELDS, ("jpg", pa.binary()), ("tif", pa.binary())])


def _maps(meta: dict[str, Any]) -> dict[str, Any]:
    """Python dicts to Arrow map entries (lists of pairs)."""
    row = dict(meta)
    row["osm"] = [{**e, "tags": list(e["tags"].items())} for e in meta["osm"]]
    row["landcover"] = list(meta["landcover"].items())
    row["scores"] = list(meta["scores"].items())
    row["caption"] = meta["captions"][0]["text"] if meta["captions"] else None
    return row


def to_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Sample metadata dicts (plus image columns for the Parquet shard) to a typed table."""
    converted = [_maps(r) for r in rows]
    return pa.Table.from_pylist(converted, schema=schema)
