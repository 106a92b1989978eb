"""DuckDB connections of the manifest and the corpus passes: an optional memory cap.

They run in the build's driver. DuckDB's own default lets a connection take 80% of the
machine's memory, and the manifest needs memory in proportion to the corpus (measured: about
0.4 KB per sample when DuckDB checkpoints the samples table: a 64 MB cap failed a 162k-sample
build, 256 MB held 543k). ``$GEOWEAVE_DUCKDB_MEMORY`` (a DuckDB size such as ``8GB``) caps
every connection: past it DuckDB spills sorts, joins and aggregates to a temporary folder
and evicts cached pages, and it fails with an out-of-memory error when one step (a
checkpoint) needs more than the cap. Unset, DuckDB's default holds.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import duckdb

MEMORY_ENV = "GEOWEAVE_DUCKDB_MEMORY"


def memory_limit() -> str | None:
    """The cap from the environment, as DuckDB reads it; None: DuckDB's default."""
    return os.environ.get(MEMORY_ENV) or None


def connect(path: str | Path | None = None, **config: Any) -> duckdb.DuckDBPyConnection:
    """A connection (an in-memory database when ``path`` is None), under the cap when one is
    set, spilling to the system's temporary folder."""
    con = duckdb.connect(str(path) if path is not None else ":memory:", config=config)
    limit = memory_limit()
    if limit is not None:
        con.execute(f"SET memory_limit = '{limit}'")
    spill = Path(tempfile.gettempdir()) / f"geoweave-duckdb-{os.getpid()}"
    con.execute("SET temp_directory = ?", [str(spill)])
    return con
