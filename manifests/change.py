"""Change between the dates of one grid cell (corpus pass ``change_v1``).

With several acquisitions per cell (STAC ``choose: all_dates``) and land cover of several
dates (``labels.landcover.by_date``), the kept samples of a cell are taken oldest first; for
each consecutive pair whose land cover came from two different dates, the classes whose
share of the valid pixels changed by at least ``min_change`` are described, largest change
first: "Between 1999 and 2001, tree cover fell from 75% to 25% and built-up area rose from
0% to 50%." The row belongs to the later sample and names the earlier one. Labels of one
date only (one land-cover raster, one OSM snapshot) never yield a row: a change must be in
the labels, not guessed from the pixels.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from geoweave.manifests.passes import sidecar_query
from geoweave.protocols import PassInput
from geoweave.registry import CORPUS_PASSES

SCHEMA = pa.schema([
    ("key", pa.string()), ("cell", pa.string()), ("earlier_key", pa.string()),
    ("earlier_acquired", pa.string()), ("acquired", pa.string()), ("change", pa.string()),
    ("largest_change", pa.float64()),
])  # fmt: skip
ROW = pa.schema([
    ("key", pa.string()), ("cell", pa.string()), ("acquired", pa.string()),
    ("landcover_date", pa.string()),
    ("landcover", pa.map_(pa.string(), pa.float64())),
])  # fmt: skip
DATED_SQL = """
SELECT key, cell, acquired, landcover_date, landcover
FROM read_parquet(?, union_by_name = true)
WHERE status = 'kept' AND cell IS NOT NULL AND acquired IS NOT NULL
  AND landcover_date IS NOT NULL
  AND cell IN (SELECT cell FROM read_parquet(?, union_by_name = true)
               WHERE status = 'kept' GROUP BY cell HAVING count(*) > 1)
ORDER BY cell, acquired, key
"""


class ChangeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    min_change: float = Field(
        0.1, gt=0, le=1, description="a class share must change by this much (0.1: 10 points)"
    )


def describe(before: dict[str, float], after: dict[str, float], years: tuple[str, str],
             min_change: float) -> tuple[str, float] | None:  # fmt: skip
    """The sentence for one pair of dates and its largest change; None under ``min_change``."""
    classes = sorted(set(before) | set(after))
    moves = [(after.get(c, 0.0) - before.get(c, 0.0), c) for c in classes]
    moves = [m for m in moves if abs(m[0]) >= min_change]
    if not moves:
        return None
    moves.sort(key=lambda m: (-abs(m[0]), m[1]))
    parts = [
        f"{c.lower()} {'rose' if d > 0 else 'fell'} from {round(100 * before.get(c, 0.0))}% "
        f"to {round(100 * after.get(c, 0.0))}%"
        for d, c in moves[:3]
    ]
    text = ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1]
    return f"Between {years[0]} and {years[1]}, {text}.", round(abs(moves[0][0]), 4)


def changes(rows: Iterable[dict[str, Any]], min_change: float) -> list[dict[str, Any]]:
    """Rows (``ROW``, ordered by cell then date) to change rows (``SCHEMA``)."""
    out: list[dict[str, Any]] = []
    prev: dict[str, Any] | None = None
    for r in rows:
        if prev and prev["cell"] == r["cell"] and prev["landcover_date"] != r["landcover_date"]:
            out += _pair(prev, r, min_change)
        prev = r
    return out


def _pair(
    earlier: dict[str, Any], later: dict[str, Any], min_change: float
) -> list[dict[str, Any]]:
    years = (earlier["acquired"][:4], later["acquired"][:4])
    found = describe(dict(earlier["landcover"]), dict(later["landcover"]), years, min_change)
    if found is None:
        return []
    return [{"key": later["key"], "cell": later["cell"], "earlier_key": earlier["key"],
             "earlier_acquired": earlier["acquired"], "acquired": later["acquired"],
             "change": found[0], "largest_change": found[1]}]  # fmt: skip


@CORPUS_PASSES.add("change_v1")
class ChangePass:
    name = "change_v1"
    Options = ChangeOptions

    def __init__(self, opts: ChangeOptions | None = None) -> None:
        self.opts = opts or ChangeOptions()

    def run(self, inputs: PassInput) -> pa.Table:
        if not inputs.sidecars:
            return SCHEMA.empty_table()
        sidecars = list(inputs.sidecars)
        dated = sidecar_query(inputs, DATED_SQL, [sidecars], ROW)
        return pa.Table.from_pylist(changes(dated.to_pylist(), self.opts.min_change), SCHEMA)
