"""DuckDB connections of the manifest and the corpus passes: bounded memory by default.

They run in the build's driver, which must stay flat however large the corpus. Two DuckDB
defaults work against that: a connection may take 80% of the machine's memory, and since
DuckDB 1.3 every Parquet file it reads stays cached in that memory (the external file cache:
measured, loading 543k samples from 1,087 sidecars took the driver to 1.2 GB, 0.55 GB of it
that cache). A manifest connection turns the cache off and caps DuckDB at ``DEFAULT_MEMORY``:
past it DuckDB spills sorts, joins and aggregates to a temporary folder and evicts cached
pages. Measured with the cap: 0.54M, 1.1M and 2.2M samples loaded at 346, 365 and 376 MB
peak RSS; a whole build's driver at 693 MB for 543k samples and 717 MB for 1.6M. A checkpoint of the samples table needs a fixed ~64 MB (one block per column
segment), so a cap below ~96 MB fails. ``$GEOWEAVE_DUCKDB_MEMORY`` (a DuckDB size such as
``2GB``) sets another cap.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import duckdb

MEMORY_ENV = "GEOWEAVE_DUCKDB_MEMORY"
DEFAULT_MEMORY = "256MB"


def memory_limit() -> str:
    """The cap, as DuckDB reads it: the environment's, else ``DEFAULT_MEMORY``."""
    return os.environ.get(MEMORY_ENV) or DEFAULT_MEMORY


def bound(con: duckdb.DuckDBPyConnection) -> None:
    """Put ``con`` under the cap, without the external file cache."""
    con.execute("SET memory_limit = ?", [memory_limit()])
    con.execute("SET enable_external_file_cache = false")


def connect(path: str | Path | None = None, **config: Any) -> duckdb.DuckDBPyConnection:
    """A connection (an in-memory database when ``path`` is None) under the cap, without the
    external file cache, spilling to the system's temporary folder."""
    con = duckdb.connect(str(path) if path is not None else ":memory:", config=config)
    bound(con)
    spill = Path(tempfile.gettempdir()) / f"geoweave-duckdb-{os.getpid()}"
    con.execute("SET temp_directory = ?", [str(spill)])
    return con
