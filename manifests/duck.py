"""DuckDB connections of the manifest and the corpus passes, with bounded memory.

DuckDB's own default lets a connection take 80% of the machine's memory; the manifest and
the passes run in the build's driver, beside Ray's own processes, so they get a cap instead:
``$GEOWEAVE_DUCKDB_MEMORY`` (a DuckDB size such as ``2GB``) when set; else the manifest's
loader, which only appends sidecars while the shards run, gets ``LOADER_MEMORY`` and the
corpus passes (joins, sorts) a quarter of the machine's memory, at most 4 GB. Past the cap
DuckDB spills to a temporary folder and evicts cached pages of the manifest file: a
continent's manifest is built in the same memory as a city's.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import duckdb

MEMORY_ENV = "GEOWEAVE_DUCKDB_MEMORY"
MAX_DEFAULT = 4 << 30
LOADER_MEMORY = "256MB"


def memory_limit(default: str | None = None) -> str:
    """The cap for one connection, as DuckDB reads it: the environment's, else ``default``,
    else a quarter of the machine's memory (at most 4 GB)."""
    if os.environ.get(MEMORY_ENV):
        return os.environ[MEMORY_ENV]
    if default is not None:
        return default
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return f"{min(total // 4, MAX_DEFAULT) >> 20}MB"


def connect(
    path: str | Path | None = None, memory: str | None = None, **config: Any
) -> duckdb.DuckDBPyConnection:
    """A connection (an in-memory database when ``path`` is None) under the memory cap
    (``memory_limit(memory)``), which spills to the system's temporary folder."""
    con = duckdb.connect(str(path) if path is not None else ":memory:", config=config)
    con.execute(f"SET memory_limit = '{memory_limit(memory)}'")
    spill = Path(tempfile.gettempdir()) / f"geoweave-duckdb-{os.getpid()}"
    con.execute("SET temp_directory = ?", [str(spill)])
    return con
