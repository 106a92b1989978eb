"""A corpus pass from a recipe plugin: caption length statistics per GSD, as an overlay table."""

from __future__ import annotations

import duckdb
import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from geoweave.protocols import PassInput
from geoweave.registry import CORPUS_PASSES


@CORPUS_PASSES.add("caption_words_test")
class CaptionWords:
    """Mean words per first caption of the kept samples, per GSD."""

    name = "caption_words_test"

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)

        status: str = "kept"

    def __init__(self, opts: Options) -> None:
        self.status = opts.status

    def run(self, inputs: PassInput) -> pa.Table:
        sql = (
            "SELECT gsd_m, count(*) AS samples, avg(len(string_split(caption, ' '))) AS words "
            "FROM read_parquet(?) WHERE status = ? GROUP BY 1 ORDER BY 1"
        )
        with duckdb.connect() as con:
            return con.execute(sql, [list(inputs.sidecars), self.status]).to_arrow_table()
