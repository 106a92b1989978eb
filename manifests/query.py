"""Read-only SQL over a build's manifest, printed as a table, CSV or JSON.

``query`` cannot write or reach the network, whatever the SQL says. Two locks, each enough for
the statements it knows:

- Every statement is parsed before any runs; only queries pass (SELECT, FROM, WITH, VALUES,
  DESCRIBE, SHOW, SUMMARIZE, PRAGMA that reads, and EXPLAIN of one of those). COPY, ATTACH,
  EXPORT, INSTALL, LOAD, SET, CREATE and the rest are refused by name.
- The connection is read-only and locked with DuckDB's own settings: no extension autoload or
  autoinstall, ``enable_external_access = false`` with the output folder as the only allowed
  directory (the corpus's own files stay readable: ``read_parquet('OUT/*.samples.parquet')``),
  then ``lock_configuration`` so no statement can undo it.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import duckdb

from geoweave.errors import FatalError
from geoweave.manifests.duck import bound
from geoweave.manifests.manifest import MANIFEST
from geoweave.text import printable

_QUERY = duckdb.StatementType.SELECT
_EXPLAIN_PREFIX = re.compile(r"^\s*EXPLAIN\s+(?:ANALY[SZ]E\s+)?(?:\([^)]*\)\s*)?", re.IGNORECASE)


def open_manifest(out_dir: str | Path, capped: bool = False) -> duckdb.DuckDBPyConnection:
    """The manifest, read-only, locked to reading files in its own folder; ``capped``: under
    the build's DuckDB memory cap (``manifests/duck.py``: the report at the end of a build),
    else DuckDB's default (a user's query may use the machine)."""
    path = Path(out_dir)
    if path.is_dir():
        path = path / MANIFEST
    if not path.is_file():
        raise FatalError(
            f"no manifest at {path}: run `build-dataset run RECIPE --output {out_dir}` first"
        )
    folder = str(path.resolve().parent).rstrip("/") + "/"
    config: dict[str, Any] = {
        "autoload_known_extensions": False,
        "autoinstall_known_extensions": False,
    }
    con = duckdb.connect(str(path), read_only=True, config=config)
    if capped:
        bound(con)
    con.execute("SET allowed_directories = ?", [[folder]])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def read_only_statements(sql: str) -> list[str]:
    """The statements of ``sql``, each checked to be a query; anything else is refused before
    any statement runs."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as e:
        raise FatalError(f"query failed: {e}") from e
    if not statements:
        raise FatalError('no SQL statement given: pass one, e.g. "SELECT * FROM samples LIMIT 5"')
    for st in statements:
        _check(st)
    return [st.query for st in statements]


def _check(st: Any) -> None:
    text = st.query.strip()
    if st.type == _QUERY:
        return
    if st.type == duckdb.StatementType.EXPLAIN:  # EXPLAIN ANALYZE runs what it explains
        inner = _EXPLAIN_PREFIX.sub("", text, count=1)
        if inner != text and all(s.type == _QUERY for s in duckdb.extract_statements(inner)):
            return
    kind = str(st.type).rsplit(".", 1)[-1].replace("_STATEMENT", "")
    raise FatalError(
        f"`query` runs read-only SQL (SELECT, FROM, WITH, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN); "
        f"refused a {kind} statement: {printable(text[:120])}"
    )


def kept_where(
    out_dir: str | Path, select: str, where: str | None, params: list[Any] | None = None
) -> list[dict[str, Any]]:
    """``SELECT {select} FROM samples`` over the kept samples matching ``where``, one SQL
    condition from the command line (``--where``): checked like ``query`` (read-only, one
    statement: a ``;`` in it would start another) and run on the locked connection."""
    return [row for batch in kept_batches(out_dir, select, where, params) for row in batch]


def kept_batches(
    out_dir: str | Path,
    select: str,
    where: str | None,
    params: list[Any] | None = None,
    order_by: str | None = None,
    rows: int = 10_000,
    group_by: str | None = None,
) -> Iterator[list[dict[str, Any]]]:
    """``kept_where`` a batch of ``rows`` at a time (in ``order_by`` order; ``group_by``:
    SQL of this code, never of the command line), so a subset of any size is never all in
    memory."""
    sql = f"SELECT {select} FROM samples WHERE status = 'kept' AND ({where or 'true'})"
    sql += f" GROUP BY {group_by}" if group_by else ""
    try:
        if len(read_only_statements(sql)) != 1:
            raise FatalError("give one SQL condition")
    except FatalError as e:
        raise FatalError(
            f'--where {where!r}: {str(e).splitlines()[0]} (e.g. "gsd_m = 30")'
        ) from None
    con = open_manifest(out_dir)
    try:
        cur = con.execute(sql + (f" ORDER BY {order_by}" if order_by else ""), params or [])
        names = [d[0] for d in cur.description]
        while batch := cur.fetchmany(rows):
            yield [dict(zip(names, r, strict=True)) for r in batch]
    except duckdb.Error as e:
        raise FatalError(f"--where {where!r}: {str(e).splitlines()[0]}") from None
    finally:
        con.close()


def run_query(out_dir: str | Path, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run read-only ``sql`` on a build's manifest; returns the last statement's columns and
    rows (as DuckDB does for several statements)."""
    statements = read_only_statements(sql)
    con = open_manifest(out_dir)
    try:
        for query in statements[:-1]:
            con.execute(query)
        rel = con.execute(statements[-1])
        cols = [d[0] for d in rel.description or []]
        return cols, rel.fetchall()
    except duckdb.Error as e:
        raise FatalError(f"query failed: {e}") from e
    finally:
        con.close()


def format_rows(
    cols: list[str], rows: list[tuple[Any, ...]], fmt: str, out: TextIO | None = None
) -> None:
    """Rows as json, csv or a table, to ``out`` (``sys.stdout`` at the time of the call)."""
    out = sys.stdout if out is None else out
    if fmt == "json":
        json.dump([dict(zip(cols, r, strict=True)) for r in rows], out, default=str, indent=1)
        out.write("\n")
    elif fmt == "csv":
        import csv

        w = csv.writer(out)
        w.writerow(cols)
        w.writerows(rows)
    else:
        _table(cols, rows, out)


def _table(cols: list[str], rows: list[tuple[Any, ...]], out: TextIO, max_width: int = 60) -> None:
    def cell(v: Any) -> str:
        s = "NULL" if v is None else printable(str(v))  # label text is untrusted
        return s if len(s) <= max_width else s[: max_width - 1] + "…"

    cells = [[cell(v) for v in r] for r in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(cols)]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))
    out.write(line + "\n" + "  ".join("-" * w for w in widths) + "\n")
    for r in cells:
        out.write("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + "\n")
    out.write(f"({len(rows)} row{'s' if len(rows) != 1 else ''})\n")
