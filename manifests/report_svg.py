"""Markup for the report: escaped HTML elements and the inline SVG charts (map of tile
footprints, histograms, horizontal bars), drawn here so the page needs no script library, no
tile server and no network.

All text that reaches the page goes through ``esc`` (or ``el``, which escapes every text
child and attribute value): label text (OSM names and tags, captions) is untrusted. ``Safe``
marks markup built here from escaped parts, so it is not escaped twice.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from geoweave.manifests.report_stats import Histogram


class Safe(str):
    """Markup already escaped (built by ``el``/``esc``); anything else is text to escape."""


def esc(value: Any) -> Safe:
    return value if isinstance(value, Safe) else Safe(html.escape(str(value), quote=True))


VOID = {"img", "meta", "br", "hr"}  # HTML elements without an end tag


def el(name: str, *children: Any, **attrs: Any) -> Safe:
    """``<name attrs>children</name>``; attribute names are the code's own (``class_`` for
    ``class``, ``_`` for ``-``), values and text children are escaped; None is left out."""
    parts = "".join(
        f' {k.rstrip("_").replace("_", "-")}="{esc(v)}"' for k, v in attrs.items() if v is not None
    )
    if name in VOID:
        return Safe(f"<{name}{parts}>")
    return Safe(f"<{name}{parts}>{join(children)}</{name}>")


def join(children: Iterable[Any]) -> Safe:
    return Safe("".join(esc(c) for c in children if c is not None))


def _n(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


STATUS_COLOURS = {"kept": "#2ca25f", "rejected": "#bdbdbd", "failed": "#de2d26"} | {
    "rejected_by_review": "#8856a7"
}
SPLIT_COLOURS = {"train": "#3182bd", "val": "#fd8d3c", "test": "#c51b8a", "buffer": "#969696"}
Box = tuple[float, float, float, float]
OTHER = "#fee391"  # a value without a colour of its own (a plugin's status)
NONE = "#e5e5e5"  # no split


def footprint_map(
    footprints: Sequence[Any], area: Sequence[float] | None, by: str, width: float = 520
) -> Safe:
    """Tile footprints in lon/lat (equirectangular, x scaled by the cosine of the mid
    latitude), filled by ``by`` (``status`` or ``split``), coarse tiles under fine ones,
    with the recipe's area as a dashed box and a legend with counts."""
    colours = STATUS_COLOURS if by == "status" else SPLIT_COLOURS
    every = _boxes(footprints, area)  # the area's box last
    boxes = every[: len(footprints)]
    if not len(every):
        return el("p", "no tile footprints to draw", class_="note")
    west, south = float(every[:, 0].min()), float(every[:, 1].min())
    east, north = float(every[:, 2].max()), float(every[:, 3].max())
    kx = math.cos(math.radians((south + north) / 2))
    scale = min(width / max((east - west) * kx, 1e-9), 560 / max(north - south, 1e-9))
    w, h = (east - west) * kx * scale, (north - south) * scale

    def box(b: Box) -> dict[str, str]:
        x, y = (b[0] - west) * kx * scale, (north - b[3]) * scale
        bw, bh = (b[2] - b[0]) * kx * scale, (b[3] - b[1]) * scale
        return {"x": _n(x), "y": _n(y), "width": _n(max(bw, 0.5)), "height": _n(max(bh, 0.5))}

    titled = len(footprints) <= 5000  # a tooltip per tile, while the page stays small
    groups, counts = [], dict[Any, int]()
    for (gsd, value), members in _groups(footprints, by).items():
        if titled:
            rects = [el("rect", el("title", _tip(f)), **box(tuple(boxes[i]))) for i, f in members]
        else:  # numbers only, formatted in one pass (for 20,000 tiles 0.09 -> 0.02 s)
            at = np.array([i for i, _f in members], dtype=np.int64)
            rects = [_rects(boxes[at], west, north, kx, scale)]
        fill = colours.get(value, NONE if value is None else OTHER)
        groups.append(el("g", *rects, fill=fill, fill_opacity="0.75", data_gsd=_n(gsd)))
        counts[value] = counts.get(value, 0) + len(members)
    dashed = {"fill": "none", "stroke": "#333", "stroke_dasharray": "4 3"}
    outline = el("rect", **dashed, **box(tuple(every[-1]))) if area else None  # shifted too
    legend = _legend(counts, colours, h + 16)
    return el(
        "svg",
        el("rect", width=_n(w), height=_n(h), fill="#f7fbff"),
        *groups,
        outline,
        legend,
        _corner(west, south, east, north, w, h),
        xmlns="http://www.w3.org/2000/svg",
        width=_n(w),
        height=_n(h + 22 + 18 * len(counts)),
        viewBox=f"0 0 {_n(w)} {_n(h + 22 + 18 * len(counts))}",
        role="img",
        aria_label=f"map of tile footprints by {by}",
        class_="map",
    )


_RECT = '<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f"></rect>'


def _rects(b: np.ndarray, west: float, north: float, kx: float, scale: float) -> Safe:
    """The ``rect`` elements of (n, 4) boxes, each number as ``box`` gives it (computed in the
    same order, then ``_n``: one decimal, a ``.0`` dropped); nothing to escape."""
    x, y = (b[:, 0] - west) * kx * scale, (north - b[:, 3]) * scale
    w = np.maximum((b[:, 2] - b[:, 0]) * kx * scale, 0.5)
    h = np.maximum((b[:, 3] - b[:, 1]) * scale, 0.5)
    columns = (x.tolist(), y.tolist(), w.tolist(), h.tolist())
    return Safe("".join(_RECT % r for r in zip(*columns, strict=True)).replace('.0"', '"'))


def _boxes(footprints: Sequence[Any], area: Sequence[float] | None) -> np.ndarray:
    """(n, 4) west, south, east, north of each footprint and then of ``area`` (if any). A box
    crossing the antimeridian (west > east) becomes one box east of 180 degrees; boxes on both
    sides of it (spanning more than half the world) have the western hemisphere's moved east
    by 360 degrees, so the map shows one area, not the world."""
    rows = [(f.west, f.south, f.east, f.north) for f in footprints]
    b = np.array(rows + ([tuple(area)] if area else []), dtype=np.float64).reshape(-1, 4)
    b[:, 2] = np.where(b[:, 2] < b[:, 0], b[:, 2] + 360, b[:, 2])
    if len(b) and b[:, 2].max() - b[:, 0].min() > 180:
        western = b[:, 0] < 0
        b[western, 0] += 360
        b[western, 2] += 360
    return b


def _groups(footprints: Sequence[Any], by: str) -> dict[tuple[float, Any], list[Any]]:
    out: dict[tuple[float, Any], list[Any]] = {}
    for i, f in enumerate(footprints):  # already coarse GSD first
        out.setdefault((f.gsd_m, getattr(f, by)), []).append((i, f))
    return out


def _tip(f: Any) -> str:
    reason = f" ({f.reason})" if f.reason else ""
    return f"{f.key}: {f.status}{reason}, split {f.split or 'none'}, {f.gsd_m:g} m"


def _legend(counts: dict[Any, int], colours: dict[str, str], y0: float) -> Safe:
    rows = []
    for i, (value, n) in enumerate(sorted(counts.items(), key=lambda kv: -kv[1])):
        fill = colours.get(value, NONE if value is None else OTHER)
        y = y0 + 18 * i
        rows.append(el("rect", x="0", y=_n(y - 10), width="12", height="12", fill=fill))
        rows.append(el("text", f"{value or 'none'}: {n:,}", x="18", y=_n(y), class_="lbl"))
    return el("g", *rows)


def _corner(west: float, south: float, east: float, north: float, w: float, h: float) -> Safe:
    def deg(v: float, pos: str, neg: str) -> str:
        v = (v + 180) % 360 - 180 if pos == "E" else v
        return f"{abs(v):.3f}°{pos if v >= 0 else neg}"

    sw, ne = (
        f"{deg(west, 'E', 'W')} {deg(south, 'N', 'S')}",
        f"{deg(east, 'E', 'W')} {deg(north, 'N', 'S')}",
    )
    text = f"{sw} – {ne}"
    return el("text", text, x=_n(w), y=_n(h + 14), text_anchor="end", class_="lbl")


def histogram(hist: Histogram, width: float = 300, height: float = 120) -> Safe:
    """Vertical bars of ``hist``'s counts under a 14 px band for the largest count, with the
    first and last edge (or whole number) below; each bar's tooltip gives its range and count.
    A single bin (every value equal) is one narrow bar labelled with the value."""
    top, pad = max(hist.counts) or 1, 14
    bw = width / len(hist.counts) if len(hist.counts) > 1 else 40
    x0 = 0 if len(hist.counts) > 1 else (width - bw) / 2
    bars = []
    for i, n in enumerate(hist.counts):
        lo, hi = hist.edges[i], hist.edges[i + 1]
        span = _n(lo + 0.5) if hist.integer or len(hist.counts) == 1 else f"{lo:.4g} to {hi:.4g}"
        bh = height * n / top
        bars.append(
            el(
                "rect",
                el("title", f"{span}: {n:,}"),
                x=_n(x0 + i * bw + 0.5),
                y=_n(pad + height - bh),
                width=_n(max(bw - 1, 0.5)),
                height=_n(bh),
            )
        )
    y = _n(pad + height + 14)
    if len(hist.counts) == 1:
        value = f"all {hist.edges[0] + 0.5:.4g}"
        labels = [el("text", value, x=_n(width / 2), y=y, text_anchor="middle", class_="lbl")]
    else:
        first = _n(hist.edges[0] + 0.5) if hist.integer else f"{hist.edges[0]:.4g}"
        last = _n(hist.edges[-1] - 0.5) if hist.integer else f"{hist.edges[-1]:.4g}"
        labels = [
            el("text", first, x="0", y=y, class_="lbl"),
            el("text", last, x=_n(width), y=y, text_anchor="end", class_="lbl"),
        ]
    labels.append(el("text", f"max {top:,}", x=_n(width), y="10", text_anchor="end", class_="lbl"))
    total_h = _n(pad + height + 18)
    return el(
        "svg",
        el("g", *bars, fill="#4a7ab5"),
        *labels,
        xmlns="http://www.w3.org/2000/svg",
        width=_n(width),
        height=total_h,
        viewBox=f"0 0 {_n(width)} {total_h}",
        role="img",
        aria_label=f"histogram of {hist.title}",
        class_="hist",
    )


def bars(rows: Sequence[tuple[str, float, str]], width: float = 420) -> Safe:
    """Horizontal bars: (label, value, value as text) rows, the longest bar the largest."""
    if not rows:
        return el("p", "none", class_="note")
    top = max(v for _, v, _ in rows) or 1
    label_w, row_h = width * 0.45, 18
    out = []
    for i, (label, value, text) in enumerate(rows):
        y = i * row_h
        shown = label if len(label) <= 40 else label[:39] + "…"
        out.append(el("text", el("title", label), shown, x="0", y=_n(y + 13), class_="lbl"))
        bw = (width - label_w - 70) * value / top
        out.append(el("rect", x=_n(label_w), y=_n(y + 3), width=_n(max(bw, 0.5)), height="12"))
        out.append(el("text", text, x=_n(label_w + bw + 4), y=_n(y + 13), class_="lbl"))
    h = row_h * len(rows) + 4
    return el(
        "svg",
        el("g", *out, fill="#4a7ab5"),
        xmlns="http://www.w3.org/2000/svg",
        width=_n(width),
        height=_n(h),
        viewBox=f"0 0 {_n(width)} {_n(h)}",
        role="img",
        class_="bars",
    )
