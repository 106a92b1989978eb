"""SQL over a build's sidecars, without DuckDB's ``union_by_name`` when it is not needed.

``read_parquet(files, union_by_name = true)`` opens a reader for every file up front and holds
them all through the query: measured, a pass over 3,263 sidecars took 430 MB beyond DuckDB's
memory cap (about 130 KB a file, so in proportion to the corpus), against 10 MB without it.
Without it DuckDB takes the first file's columns and matches the other files' by name, and
fails on a file lacking one of them (a sidecar written by an older geoweave). So a query runs
without it when the first sidecar holds every column this version writes, and again with it
when that fails (a file lacking a column, a column of another type).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import duckdb
import pyarrow.parquet as pq

from geoweave.record import SIDECAR_SCHEMA

log = logging.getLogger("geoweave")

UNION = "read_parquet(?, union_by_name = true)"  # what a query over sidecars writes
PLAIN = "read_parquet(?)"
LOADED = "sidecar_rows(?)"  # the same rows, loaded in a table ``samples`` already
LOADED_MACRO = "CREATE OR REPLACE TEMP MACRO sidecar_rows(files) AS TABLE SELECT * FROM samples"


def execute(
    con: duckdb.DuckDBPyConnection, sql: str, params: list[Any], sidecars: Sequence[str]
) -> duckdb.DuckDBPyConnection:
    """``con.execute(sql, params)``, each ``UNION`` in ``sql`` read as ``PLAIN`` when that
    reads the same rows (see the module docstring)."""
    if UNION in sql and sidecars and _complete(sidecars[0]):
        try:
            return con.execute(sql.replace(UNION, PLAIN), params)
        except duckdb.Error as e:  # a file lacks a column, or types differ: read by name
            log.info("reading the sidecars by name (%s)", str(e).splitlines()[0])
    return con.execute(sql, params)


def _complete(path: str) -> bool:
    try:
        return set(SIDECAR_SCHEMA.names) <= set(pq.read_schema(path).names)
    except (OSError, ValueError):
        return False  # unreadable: let DuckDB name the file in its error


def execute_loaded(
    con: duckdb.DuckDBPyConnection, sql: str, params: list[Any]
) -> duckdb.DuckDBPyConnection:
    """``con.execute(sql, params)`` over the sidecars' rows that ``con``'s table ``samples``
    holds already: each ``UNION`` or ``PLAIN`` reads that table (its parameter, the sidecar
    list, is left in place and unused)."""
    con.execute(LOADED_MACRO)
    return con.execute(sql.replace(UNION, LOADED).replace(PLAIN, LOADED), params)
