"""Read-only SQL over a build's manifest, printed as a table, CSV or JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, TextIO

import duckdb

from geoweave.errors import FatalError
from geoweave.manifests.manifest import MANIFEST


def open_manifest(out_dir: str | Path) -> duckdb.DuckDBPyConnection:
    path = Path(out_dir)
    if path.is_dir():
        path = path / MANIFEST
    if not path.is_file():
        raise FatalError(
            f"no manifest at {path}: run `build-dataset run RECIPE --output {out_dir}` first"
        )
    return duckdb.connect(str(path), read_only=True)


def run_query(out_dir: str | Path, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    con = open_manifest(out_dir)
    try:
        rel = con.execute(sql)
        cols = [d[0] for d in rel.description or []]
        return cols, rel.fetchall()
    except duckdb.Error as e:
        raise FatalError(f"query failed: {e}") from e
    finally:
        con.close()


def format_rows(
    cols: list[str], rows: list[tuple[Any, ...]], fmt: str, out: TextIO = sys.stdout
) -> None:
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
        s = "NULL" if v is None else str(v)
        return s if len(s) <= max_width else s[: max_width - 1] + "…"

    cells = [[cell(v) for v in r] for r in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(cols)]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))
    out.write(line + "\n" + "  ".join("-" * w for w in widths) + "\n")
    for r in cells:
        out.write("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + "\n")
    out.write(f"({len(rows)} row{'s' if len(rows) != 1 else ''})\n")
