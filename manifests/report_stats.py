"""The report's histograms, binned in DuckDB over the kept samples (caption length, labels
per tile, and every score the filters wrote), so only the bin counts reach Python."""

from __future__ import annotations

import math
from dataclasses import dataclass

import duckdb

BINS = 20

# (title, x-axis unit, SQL yielding one column ``v`` per value, over the kept samples)
SERIES = (
    ("caption length", "words per caption",
     "SELECT len(string_split(trim(c.text), ' '))::DOUBLE v "
     "FROM (SELECT unnest(captions) c FROM samples WHERE status = 'kept')"),
    ("labels per tile", "visible label elements",
     "SELECT len(osm)::DOUBLE v FROM samples WHERE status = 'kept'"),
    ("QA pairs per tile", "pairs", "SELECT len(qa)::DOUBLE v FROM samples WHERE status = 'kept'"),
)  # fmt: skip
SCORES = (
    "SELECT k, v FROM (SELECT unnest(map_keys(scores)) k, unnest(map_values(scores)) v "
    "FROM samples WHERE status = 'kept')"
)


@dataclass
class Histogram:
    """Counts of values in ``len(counts)`` bins between ``edges``; ``integer`` bins hold one
    whole number each (a bin's label is that number)."""

    title: str
    unit: str
    edges: list[float]
    counts: list[int]
    integer: bool = False

    @property
    def total(self) -> int:
        return sum(self.counts)


def histograms(con: duckdb.DuckDBPyConnection) -> list[Histogram]:
    """The fixed series, then one histogram per score key (``score: NAME``)."""
    out = []
    for title, unit, sql in SERIES:
        out.extend(binned(con, f"SELECT {title!r} g, v FROM ({sql})", unit))
    out.extend(binned(con, SCORES.replace("SELECT k, v", "SELECT 'score: ' || k g, v"), "score"))
    return out


def binned(con: duckdb.DuckDBPyConnection, values: str, unit: str) -> list[Histogram]:
    """Histograms of ``values`` (SQL with columns ``g``, ``v``), one per ``g``: whole numbers
    spanning at most ``BINS`` get one bin each, anything else ``BINS`` equal bins (one bin
    when every value is equal). NaN and infinite values are left out."""
    base = f"SELECT g, v FROM ({values}) WHERE v IS NOT NULL AND isfinite(v)"
    ranges = con.execute(
        f"SELECT g, min(v), max(v), bool_and(v = floor(v)) FROM ({base}) GROUP BY g ORDER BY g"
    ).fetchall()
    out = []
    for g, lo, hi, whole in ranges:
        edges, integer = _edges(float(lo), float(hi), bool(whole))
        width = edges[1] - edges[0]
        counts = dict(
            con.execute(
                f"SELECT least(floor((v - ?) / ?)::BIGINT, ?) b, count(*) FROM ({base}) "
                "WHERE g = ? GROUP BY b",
                [edges[0], width, len(edges) - 2, g],
            ).fetchall()
        )
        bins = [int(counts.get(i, 0)) for i in range(len(edges) - 1)]
        out.append(Histogram(str(g), unit, edges, bins, integer))
    return out


def _edges(lo: float, hi: float, whole: bool) -> tuple[list[float], bool]:
    if whole and hi - lo + 1 <= BINS:
        return [lo - 0.5 + i for i in range(int(hi - lo) + 2)], True
    if hi == lo:
        return [lo - 0.5, lo + 0.5], False
    width = (hi - lo) / BINS
    edges = [lo + i * width for i in range(BINS)] + [hi]
    return [e if math.isfinite(e) else hi for e in edges], False
