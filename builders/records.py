"""Arrow schemas of the shard files, and the conversion of sample metadata to Arrow rows.

One explicit schema keeps every shard's sidecar identical in type (an empty shard included), so
DuckDB can read all of them as one table.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa


def _element(tags_type: pa.DataType) -> pa.DataType:
    return pa.struct(
        [
            ("id", pa.string()),
            ("source", pa.string()),
            ("tags", tags_type),
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


def _sample_fields(mapping: bool) -> list[tuple[str, pa.DataType]]:
    """Sample columns; maps as Arrow maps (DuckDB) or JSON strings (Hugging Face datasets)."""
    smap = pa.map_(pa.string(), pa.string()) if mapping else pa.string()
    fmap = pa.map_(pa.string(), pa.float64()) if mapping else pa.string()
    return [
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
        ("osm_snapshot", pa.string()),
        ("osm", pa.list_(_element(smap))),
        ("landcover", fmap),
        ("captions", pa.list_(CAPTION)),
        ("qa", pa.list_(QA)),
        ("scores", fmap),
        ("license", pa.string()),
        ("caption", pa.string()),
    ]


# The sidecar feeds DuckDB, which queries maps well (tags['building']); the Parquet shard is
# read by Hugging Face `datasets`, which has no map type, so its maps are JSON strings.
SIDECAR_SCHEMA = pa.schema(_sample_fields(mapping=True))
PARQUET_SCHEMA = pa.schema(
    [*_sample_fields(mapping=False), ("jpg", pa.binary()), ("tif", pa.binary())]
)


def _convert(meta: dict[str, Any], mapping: bool) -> dict[str, Any]:
    """Python dicts to Arrow map entries (lists of pairs) or to JSON text."""
    conv = (lambda d: list(d.items())) if mapping else (lambda d: json.dumps(d, sort_keys=True))
    row = dict(meta)
    row["osm"] = [{**e, "tags": conv(e["tags"])} for e in meta["osm"]]
    row["landcover"] = conv(meta["landcover"])
    row["scores"] = conv(meta["scores"])
    row["caption"] = meta["captions"][0]["text"] if meta["captions"] else None
    return row


def to_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Sample metadata dicts (plus image columns for the Parquet shard) to a typed table."""
    mapping = pa.types.is_map(schema.field("landcover").type)
    return pa.Table.from_pylist([_convert(r, mapping) for r in rows], schema=schema)
