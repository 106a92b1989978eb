"""The same ground seen more than once (corpus pass ``same_ground_v1``).

All imagery sources of a build share one tile grid, so two kept samples cover the same
ground at the same GSD exactly when they share the grid CRS, the GSD and the tile transform:
two imagery sources over one place, or (with multi-date sources) two acquisitions. Such
groups are reported with every member listed; the samples stay kept unless the recipe says
``action: reject``, which keeps the first of each group (sources in recipe order are not
known here: the smallest key) and rejects the others, reason ``same_ground``. Near-identical
pixels of such a pair are found by ``near_duplicates_v1`` as well; different pixels of the
same ground (two dates, two sensors) only here.
"""

from __future__ import annotations

from typing import Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from geoweave.manifests.passes import sidecar_query
from geoweave.protocols import PassInput
from geoweave.registry import CORPUS_PASSES

SCHEMA = pa.schema(
    [("key", pa.string()), ("same_ground_as", pa.string()), ("group_size", pa.int64())]
    + [("sources", pa.list_(pa.string())), ("reject_reason", pa.string())]
)
GROUPS_SQL = """
WITH kept AS (
    SELECT key, source, crs, gsd_m, transform FROM read_parquet(?, union_by_name = true)
    WHERE status = 'kept'
), grouped AS (
    SELECT key, source,
           min(key) OVER g AS first, count(*) OVER g AS n, list(source) OVER g AS sources
    FROM kept WINDOW g AS (PARTITION BY crs, gsd_m, transform)
)
SELECT key, first AS same_ground_as, n AS group_size, list_sort(sources) AS sources,
       CASE WHEN ? AND key <> first THEN 'same_ground' END AS reject_reason
FROM grouped WHERE n > 1 ORDER BY key
"""


class SameGroundOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    action: Literal["report", "reject"] = Field(
        "report", description="reject: keep one sample of each place and GSD"
    )


@CORPUS_PASSES.add("same_ground_v1")
class SameGroundPass:
    name = "same_ground_v1"
    Options = SameGroundOptions

    def __init__(self, opts: SameGroundOptions | None = None) -> None:
        self.opts = opts or SameGroundOptions()

    def run(self, inputs: PassInput) -> pa.Table:
        return sidecar_query(inputs, GROUPS_SQL, [self.opts.action == "reject"], SCHEMA)
