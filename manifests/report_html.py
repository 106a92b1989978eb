"""The report page: one self-contained HTML file (inline CSS, SVG, images as ``data:`` URIs
and one small script) that works offline.

Its Content-Security-Policy allows nothing from the network and only this page's own style
and script (by their SHA-256), so even markup that slipped past escaping could not run or
fetch anything. The script sets ``data-ready`` on ``<body>`` at the load event, with how many
images loaded with a size (decoded) and the map's and gallery's positions, which the browser
test reads.
"""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Any

from geoweave.manifests.report_data import GalleryItem, ReportData
from geoweave.manifests.report_images import mime_type
from geoweave.manifests.report_svg import Safe, bars, el, footprint_map, histogram, join

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:0 16px;color:#222}
h1{margin:16px 0 4px}h2{border-bottom:1px solid #ddd;margin-top:28px}h4{margin:8px 0 2px}
.note{color:#666}.lbl{fill:#333;font:11px sans-serif}.grid{display:flex;flex-wrap:wrap;gap:16px}
.card{border:1px solid #ddd;border-radius:4px;padding:8px;width:270px;font-size:12px}
.card img{width:128px;height:128px;image-rendering:pixelated;display:block;margin-bottom:4px}
.card ul{padding-left:16px;margin:2px 0}.key{font-family:monospace;word-break:break-all}
table{border-collapse:collapse}td,th{padding:2px 8px;border-bottom:1px solid #eee;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}.bad{color:#b30000}
.tag{display:inline-block;background:#eef;border-radius:3px;padding:0 4px;margin:1px}
"""
SCRIPT = """window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images), b = document.body;
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  b.setAttribute('data-images', String(imgs.length));
  b.setAttribute('data-decoded', String(ok.length));
  ['map', 'gallery'].forEach(function (id) {
    var r = document.getElementById(id).getBoundingClientRect();
    b.setAttribute('data-' + id, [r.left + scrollX, r.top + scrollY, r.width, r.height]
      .map(Math.round).join(','));
  });
  b.setAttribute('data-ready', '1');
});"""


def _sha(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


CSP = (
    f"default-src 'none'; img-src data:; style-src {_sha(CSS)}; script-src {_sha(SCRIPT)}; "
    "base-uri 'none'; form-action 'none'"
)


def render(data: ReportData) -> str:
    """The whole page for ``data``."""
    head = join(
        [
            Safe('<meta charset="utf-8">'),
            Safe(f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'),
            el("title", f"{data.name}: build report"),
            Safe(f"<style>{CSS}</style>"),
        ]
    )
    body = join(
        [
            _header(data),
            _map(data),
            _gallery(data),
            _funnel(data),
            _plots(data),
            _tags(data),
            _reviews(data),
            Safe(f"<script>{SCRIPT}</script>"),
        ]
    )
    return f"<!doctype html>\n<html lang='en'><head>{head}</head><body>{body}</body></html>\n"


def _header(d: ReportData) -> Safe:
    n_shards, complete, nbytes = d.shards
    gsd = ", ".join(f"{g:g} m: {k:,} of {p:,}" for g, k, p in d.by_gsd)
    splits = ", ".join(f"{s}: {n:,}" for s, n in d.splits)
    started = d.run.get("started")
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)) if started else "unknown"
    rows = [
        ("tiles planned", f"{d.planned:,}"),
        ("kept", f"{d.kept:,}"),
        ("rejected", f"{d.planned - d.kept:,}"),
        ("kept by GSD (of planned)", gsd),
        ("kept by split", splits or "splits off"),
        ("shards", f"{complete:,} of {n_shards:,} complete, {nbytes:,} bytes"),
        ("newest run", when),
    ]
    return join(
        [
            el("h1", f"{d.name}"),
            el("p", "geoweave build report", class_="note"),
            el("table", *[el("tr", el("th", k), el("td", v)) for k, v in rows], id="overview"),
        ]
    )


def _map(d: ReportData) -> Safe:
    shown, missing = len(d.footprints), d.planned - d.footprints_total
    note = f"{shown:,} tile footprints" + (
        f" (a seeded sample of {d.footprints_total:,})" if shown < d.footprints_total else ""
    )
    if missing:
        note += f"; {missing:,} tiles of shards that failed or never ran have none"
    maps = [el("div", el("h4", "by status"), footprint_map(d.footprints, d.area, "status"))]
    if any(f.split for f in d.footprints):
        maps.append(el("div", el("h4", "by split"), footprint_map(d.footprints, d.area, "split")))
    else:
        maps.append(el("p", "splits off (splits.enabled: false)", class_="note"))
    return _grid_section("Map", note, maps, "map")


def _gallery(d: ReportData) -> Safe:
    cards = [_card(item) for item in d.gallery]
    note = f"{len(cards)} kept samples drawn at random (seeded) of {d.kept:,}"
    return _grid_section("Gallery", note, cards, "gallery")


def _grid_section(title: str, note: str, items: list[Safe], section_id: str) -> Safe:
    """A section: its heading, a note, and its items side by side."""
    return el(
        "section",
        el("h2", title),
        el("p", note, class_="note"),
        el("div", *items, class_="grid"),
        id=section_id,
    )


def _card(item: GalleryItem) -> Safe:
    img = None
    if item.image:
        src = f"data:{mime_type(item.image)};base64,{base64.b64encode(item.image).decode()}"
        img = el("img", src=src, alt=item.key, width="128", height="128")
    else:
        img = el("p", "(image not found in the shard files)", class_="bad")
    caps = [el("li", c.get("text") or "", _faith(c)) for c in item.captions]
    qa = [
        el(
            "li",
            f"Q: {q.get('question')} A: {q.get('answer')}",
            " ✓" if q.get("verified") else " (unverified)",
        )
        for q in item.qa
    ]
    scores = ", ".join(f"{k} {v:.3g}" for k, v in sorted(item.scores.items()))
    meta = f"{item.source}, {item.gsd_m:g} m, split {item.split or 'none'}"
    return el(
        "div",
        img,
        el("div", item.key, class_="key"),
        el("div", meta, class_="note"),
        el("h4", "captions"),
        el("ul", *caps, class_="captions"),
        el("h4", "QA"),
        el("ul", *qa, class_="qa"),
        el("h4", "labels"),
        el("div", *[el("span", t, class_="tag") for t in item.labels], class_="labels"),
        el("div", "scores: " + scores, class_="note"),
        class_="card",
    )


def _faith(caption: dict[str, Any]) -> Safe | None:
    p = caption.get("precision")
    if p is None:
        return None
    flag = "" if caption.get("faithful", True) else ", unfaithful"
    return el("span", f" (faithfulness {p:.2f}{flag})", class_="note" if not flag else "bad")


def _table(head: list[str], rows: list[list[Any]], id_: str | None = None) -> Safe:
    def cell(v: Any) -> Safe:
        return el("td", f"{v:,}", class_="n") if isinstance(v, int) else el("td", v)

    return el(
        "table",
        el("tr", *[el("th", h) for h in head]),
        *[el("tr", *[cell(v) for v in r]) for r in rows],
        id=id_,
    )


def _funnel(d: ReportData) -> Safe:
    funnel = _table(
        ["#", "step", "rejected", "remaining"], [[p, s, r, m] for p, s, r, m in d.funnel], "funnel"
    )
    reasons = _table(
        ["status / reason", "tiles"], [[r or "(none)", n] for r, n in d.reasons], "reasons"
    )
    return el(
        "section",
        el("h2", "Filter funnel"),
        el(
            "div",
            el("div", funnel),
            el("div", el("h4", "rejections by reason"), reasons),
            class_="grid",
        ),
    )


def _plots(d: ReportData) -> Safe:
    hists = [
        el(
            "div",
            el("h4", h.title),
            histogram(h),
            el("div", f"{h.unit}, {h.total:,} values", class_="note"),
            class_="plot",
        )
        for h in d.histograms
    ]
    gsd = bars([(f"{g:g} m", k, f"{k:,}") for g, k, _ in d.by_gsd])
    lc = bars([(c, s, f"{100 * s:.1f}%") for c, s in d.landcover])
    return el(
        "section",
        el("h2", "Distributions"),
        el("div", *hists, class_="grid"),
        el(
            "div",
            el("div", el("h4", "kept tiles by GSD"), gsd),
            el("div", el("h4", "land cover: mean share of kept tiles"), lc),
            class_="grid",
        ),
        id="plots",
    )


def _tags(d: ReportData) -> Safe:
    rows = [(t, tiles, f"{tiles:,} tiles, {n:,} elements") for t, tiles, n in d.top_tags]
    return el("section", el("h2", "Top OSM tags (kept samples)"), bars(rows, 640), id="tags")


def _reviews(d: ReportData) -> Safe:
    r = d.reviews
    if not r:
        return el("section", el("h2", "Review"), el("p", "no reviews imported", class_="note"))
    summary = (
        f"{r['reviewed']:,} reviewed: {r['accepted']:,} accepted, {r['rejected']:,} "
        f"rejected; captions edited on {r['captions_edited']:,}, QA on {r['qa_edited']:,}"
    )
    issues = _table(["issue", "samples"], [[i, n] for i, n in r["issues"]])
    stats = _table(
        ["dimension", "value", "reviewed", "acceptance"],
        [[dim, v if v is not None else "(none)", n, f"{a:.0%}"] for dim, v, n, a in r["stats"]],
        "review-stats",
    )
    return el(
        "section",
        el("h2", "Review"),
        el("p", summary, id="review-summary"),
        el("div", el("div", issues), el("div", stats), class_="grid"),
        id="reviews",
    )
