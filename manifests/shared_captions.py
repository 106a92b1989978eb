"""Captions shared by many tiles (corpus pass ``shared_captions_v1``): template failures.

A caption that describes one tile should not describe a hundred: the same text on more than
``max_tiles`` kept samples says a template (or an LLM ignoring its input) wrote it without
looking at what makes each tile different. Texts are compared whitespace-normalised and case-
folded; a sample counts once per text, however many of its captions carry it. Read from the
sidecars with DuckDB, only samples the shards kept (a near-duplicate rejected later in the
manifest still counts).

The overlay has one row per sample that carries a shared caption: ``key``, ``caption`` (its
most shared one, normalised), ``count`` (the kept samples with that text), ``shared`` (how many
of its texts are shared) and ``reject_reason``: null with ``action: flag`` (the default: the
row only reports), ``shared_caption`` with ``action: reject`` (the manifest rejects it).
"""

from __future__ import annotations

import logging
from typing import Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from geoweave.manifests.passes import sidecar_query
from geoweave.protocols import PassInput
from geoweave.registry import CORPUS_PASSES

log = logging.getLogger("geoweave")

REASON = "shared_caption"
SCHEMA = pa.schema(
    [("key", pa.string()), ("caption", pa.string()), ("count", pa.int64())]
    + [("shared", pa.int64()), ("reject_reason", pa.string())]
)

SHARED_SQL = r"""
WITH raw AS (  -- the texts only: unnesting the whole caption structs took twice as long
    SELECT DISTINCT key, text
    FROM (SELECT key, unnest(list_transform(captions, c -> c.text)) AS text
          FROM read_parquet(?, union_by_name = true) WHERE status = 'kept')
    WHERE text IS NOT NULL AND trim(text) <> ''
), norm AS (  -- each distinct text normalised once: the regex is most of the pass's time
    SELECT text, lower(trim(regexp_replace(text, '\s+', ' ', 'g'))) AS caption
    FROM (SELECT DISTINCT text FROM raw)
), texts AS (
    SELECT DISTINCT key, caption FROM raw JOIN norm USING (text)
), over AS (
    SELECT caption, count(*) AS n FROM texts GROUP BY caption HAVING count(*) > ?
)
SELECT key, caption, n AS count, shared, ? AS reject_reason FROM (
    SELECT t.key, t.caption, o.n, count(*) OVER (PARTITION BY t.key) AS shared,
           row_number() OVER (PARTITION BY t.key ORDER BY o.n DESC, t.caption) AS pick
    FROM texts t JOIN over o USING (caption))
WHERE pick = 1 ORDER BY key
"""


class SharedCaptionsOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_tiles: int = Field(50, ge=1, description="a text on more kept samples is shared")
    action: Literal["flag", "reject"] = Field(
        "flag", description="flag: report only; reject: the manifest rejects those samples"
    )


@CORPUS_PASSES.add("shared_captions_v1")
class SharedCaptionsPass:
    name = "shared_captions_v1"
    Options = SharedCaptionsOptions

    def __init__(self, opts: SharedCaptionsOptions | None = None) -> None:
        self.opts = opts or SharedCaptionsOptions()

    def run(self, inputs: PassInput) -> pa.Table:
        reason = REASON if self.opts.action == "reject" else None
        table = sidecar_query(inputs, SHARED_SQL, [self.opts.max_tiles, reason], SCHEMA)
        if inputs.sidecars:
            texts = len(set(table["caption"].to_pylist()))
            log.info("shared captions: %d texts on more than %d tiles, %d samples marked", texts,
                     self.opts.max_tiles, table.num_rows)  # fmt: skip
        return table
