"""The HTML report on a real build: the SF Bay example with splits, a seeded land-cover raster
and a vector park whose name is hostile markup, then three reviews (one caption edited into
hostile markup too). The page's numbers are checked against the manifest, and the page is
loaded in a real headless Chromium: no console error, every image decoded, no injected
script ran, and a screenshot whose map and gallery are not blank."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import tarfile
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import duckdb
import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.transform import from_origin

from tests.conftest import REPO, run_cli, run_main

pytestmark = pytest.mark.integration

HOSTILE = (
    '<script>document.body.dataset.pwned="1"</script>'
    '<img src=x onerror="document.body.dataset.pwned=2">'
)
HOSTILE_CAPTION = "</li></ul><script>document.body.dataset.pwned='3'</script> & a park"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _inputs(folder: Path) -> list[str]:
    """A seeded land-cover raster (ESA WorldCover codes, 0.002 degree cells) over the area
    and a park polygon over the East Bay: the ``--set`` flags that add them to the recipe."""
    rng = np.random.default_rng(0)
    blocks = rng.choice(np.array([10, 30, 50, 80], dtype=np.uint8), size=(9, 18))
    classes = np.kron(blocks, np.ones((10, 10), dtype=np.uint8))
    raster = folder / "landcover.tif"
    profile = {"driver": "GTiff", "width": 180, "height": 90, "count": 1, "dtype": "uint8"}
    transform = from_origin(-122.52, 37.87, 0.002, 0.002)
    with rasterio.open(raster, "w", crs="EPSG:4326", transform=transform, **profile) as dst:
        dst.write(classes, 1)
    park = folder / "park.geojson"
    ring = [
        [-122.30, 37.76],
        [-122.20, 37.76],
        [-122.20, 37.84],
        [-122.30, 37.84],
        [-122.30, 37.76],
    ]
    park.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "properties": {"id": 1, "leisure": "park", "name": HOSTILE},
                        "geometry": {"type": "Polygon", "coordinates": [ring]},
                    }
                ],
            }
        )
    )
    return [
        "--set",
        "splits.enabled=true",
        "--set",
        f"labels.landcover={{path: {raster}, legend: esa_worldcover}}",
        "--set",
        f"labels.vector=[{{path: {park}, name: parks, tag_columns: [leisure, name]}}]",
    ]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    tmp = tmp_path_factory.mktemp("report")
    out, flags = tmp / "out", _inputs(tmp)
    recipe = str(REPO / "examples/sf-bay.yaml")
    res = run_cli("run", recipe, "--output", str(out), "--no-progress", *flags)
    assert res.returncode == 0, res.stderr[-3000:]
    at_build = (out / "report.html").read_text()
    again = run_main("report", str(out))  # the same build, the same seed: the same page
    assert again.returncode == 0 and again.stdout.strip() == str(out / "report.html")
    return SimpleNamespace(
        out=out, stderr=res.stderr, html=at_build, again=again, args=[recipe, *flags]
    )


@pytest.fixture(scope="module")
def reviewed(built: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A copy of the build with three of the gallery's samples reviewed (accepted; rejected;
    accepted with its first caption edited), through a Label Studio JSON export file."""
    out = tmp_path_factory.mktemp("reviewed") / "out"
    shutil.copytree(built.out, out)
    keys = [
        c.find("img").attrs["alt"]
        for c in parse(built.html).by_id("gallery").find_all("div", class_="card")
    ][:3]
    where = "key IN (" + ", ".join(f"'{k}'" for k in keys) + ")"
    tasks_file = out.parent / "tasks.json"
    res = run_main(
        "review",
        "export",
        str(out),
        "--where",
        where,
        "--sample",
        "3",
        "--to-file",
        str(tasks_file),
    )
    assert res.returncode == 0, res.stderr
    tasks = sorted(json.loads(tasks_file.read_text()), key=lambda t: keys.index(t["data"]["key"]))
    for i, (task, verdict) in enumerate(zip(tasks, ["accept", "reject", "accept"], strict=True)):
        result = [{"from_name": "verdict", "type": "choices", "value": {"choices": [verdict]}}]
        if verdict == "reject":
            result.append(
                {"from_name": "issues", "type": "choices", "value": {"choices": ["hallucination"]}}
            )
        if i == 2:
            captions = [HOSTILE_CAPTION, *json.loads(task["data"]["generated"])["captions"][1:]]
            result.append(
                {"from_name": "captions", "type": "textarea", "value": {"text": captions}}
            )
        task |= {
            "id": i + 1,
            "annotations": [{"id": i + 1, "updated_at": "2026-12-01", "result": result}],
        }
    (out.parent / "export.json").write_text(json.dumps(tasks))
    res = run_main("review", "import", str(out), "--from-file", str(out.parent / "export.json"))
    assert res.returncode == 0, res.stderr
    res = run_main("report", str(out))
    assert res.returncode == 0, res.stderr
    return SimpleNamespace(out=out, keys=keys, html=(out / "report.html").read_text())


class Node:
    def __init__(self, tag: str, attrs: dict[str, str]) -> None:
        self.tag, self.attrs, self.children = tag, attrs, list[Any]()

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def find_all(self, tag: str | None = None, class_: str | None = None) -> list[Node]:
        out = []
        for c in self.children:
            if isinstance(c, Node):
                if (tag in (None, c.tag)) and (class_ in (None, c.attrs.get("class"))):
                    out.append(c)
                out.extend(c.find_all(tag, class_))
        return out

    def find(self, tag: str) -> Node:
        return self.find_all(tag)[0]

    def by_id(self, id_: str) -> Node:
        (node,) = [n for n in self.find_all() if n.attrs.get("id") == id_]
        return node


class _Tree(HTMLParser):
    VOID = frozenset({"img", "meta", "br", "hr", "link", "input"})

    def __init__(self) -> None:
        super().__init__()
        self.stack = [Node("#root", {})]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in self.VOID:
            self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        while len(self.stack) > 1 and self.stack.pop().tag != tag:
            pass

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse(page: str) -> Node:
    tree = _Tree()
    tree.feed(page)
    return tree.stack[0]


def _sql(out: Path, sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(out / "manifest.duckdb"), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_a_build_writes_the_report_and_the_command_rewrites_it(built: SimpleNamespace) -> None:
    assert "build-dataset: report: " in built.stderr
    assert built.again.stdout.strip().endswith("report.html")
    assert (built.out / "report.html").read_text() == built.html  # deterministic
    (record,) = [json.loads(p.read_text()) for p in (built.out / "_runs").glob("*.json")]
    assert 0 < record["timings"]["report_s"] < 5
    assert not list(built.out.glob("*.tmp-*"))


def test_the_page_shows_the_manifest_numbers(built: SimpleNamespace) -> None:
    doc, out = parse(built.html), built.out
    funnel = [
        [td.text() for td in tr.find_all("td")] for tr in doc.by_id("funnel").find_all("tr")[1:]
    ]
    shown = [(int(p), s, int(r.replace(",", "")), int(m.replace(",", ""))) for p, s, r, m in funnel]
    assert shown == _sql(out, "SELECT position, step, rejected, remaining FROM funnel ORDER BY 1")
    status_map = doc.by_id("map").find_all("svg")[0]
    by_fill: dict[str, int] = {}
    for g in (g for g in status_map.find_all("g") if "data-gsd" in g.attrs):  # one per GSD, status
        by_fill[g.attrs["fill"]] = by_fill.get(g.attrs["fill"], 0) + len(g.find_all("rect"))
    counts = dict(
        _sql(out, "SELECT status, count(*) FROM samples WHERE bbox IS NOT NULL GROUP BY 1")
    )
    assert by_fill == {"#2ca25f": counts["kept"], "#bdbdbd": counts["rejected"]}
    assert sum(counts.values()) == 820
    assert f"kept: {counts['kept']:,}" in status_map.text()
    assert len(doc.by_id("map").find_all("svg")) == 2  # by status and by split
    hist = next(
        s for s in doc.find_all("svg") if s.attrs.get("aria-label") == "histogram of caption length"
    )
    bars = [int(t.text().rsplit(": ", 1)[1].replace(",", "")) for t in hist.find_all("title")]
    assert (
        sum(bars) == _sql(out, "SELECT sum(len(captions)) FROM samples WHERE status = 'kept'")[0][0]
    )
    parks = "list_bool_or([e.tags['leisure'] = 'park' FOR e IN osm])"
    park = _sql(out, f"SELECT count(*) FROM samples WHERE status = 'kept' AND {parks}")[0][0]
    assert f"leisure=park{park:,} tiles" in doc.by_id("tags").text().replace("…", "")
    classes = {
        c
        for (c,) in _sql(
            out, "SELECT DISTINCT unnest(map_keys(landcover)) FROM samples WHERE status = 'kept'"
        )
    }
    assert len(classes) == 4 and all(c in doc.by_id("plots").text() for c in classes)


def test_the_gallery_shows_seeded_kept_samples_with_their_images(built: SimpleNamespace) -> None:
    from geoweave.manifests.report_data import gather

    cards = parse(built.html).by_id("gallery").find_all("div", class_="card")
    assert len(cards) == 24
    kept = dict(_sql(built.out, "SELECT key, captions FROM samples WHERE status = 'kept'"))
    tars: dict[str, bytes] = {}
    for tar in built.out.glob("*.tar"):
        with tarfile.open(tar) as t:
            for m in (m for m in t if m.name.endswith(".jpg")):
                tars[m.name[:-4]] = t.extractfile(m).read()  # type: ignore[union-attr]
    for card in cards:
        img = card.find("img")
        key = img.attrs["alt"]
        assert base64.b64decode(img.attrs["src"].split(",", 1)[1]) == tars[key]
        shown = [
            li.text().rsplit(" (faithfulness", 1)[0]
            for li in card.find_all("ul", "captions")[0].find_all("li")
        ]
        assert shown == [c["text"] for c in kept[key]]
    assert [c.find("img").attrs["alt"] for c in cards] == [g.key for g in gather(built.out).gallery]
    assert {g.key for g in gather(built.out, seed=1).gallery} != {
        c.find("img").attrs["alt"] for c in cards
    }


def test_gallery_images_read_from_the_tar_equal_the_parquet_ones(built: SimpleNamespace) -> None:
    from geoweave.manifests.report_images import _from_parquet, _from_tar

    for parquet in sorted(built.out.glob("sf-bay-*[0-9].parquet"))[:4]:
        tar = parquet.with_suffix(".tar")
        with tarfile.open(tar) as t:
            keys = {m.name[:-4] for m in t if m.name.endswith(".jpg")}
        from_tar = _from_tar(tar, keys)
        assert len(from_tar) == len(keys) > 0 and from_tar == _from_parquet(parquet, keys)


def test_a_map_across_the_antimeridian_shows_one_area() -> None:
    from geoweave.manifests.report_data import Footprint
    from geoweave.manifests.report_svg import footprint_map

    tiles = [Footprint(179.9, -17.1, 180.0, -17.0, "kept", None, 10.0, "a", None),
             Footprint(-180.0, -17.1, -179.9, -17.0, "kept", None, 10.0, "b", None),
             Footprint(179.95, -17.2, -179.95, -17.1, "rejected", None, 10.0, "c", "x")]  # fmt: skip
    svg = parse(footprint_map(tiles, None, "status", width=300)).find("svg")
    rects = {r.find("title").text().split(":")[0]: r.attrs for r in svg.find_all("rect") if r.children}  # fmt: skip
    assert [float(rects[k]["x"]) for k in "abc"] == [0, 150, 75]  # b east of a, c across both
    assert {float(rects[k]["width"]) for k in "abc"} == {150}
    assert "179.900°E 17.200°S – 179.900°W 17.000°S" in svg.text()
    svg = parse(footprint_map(tiles, (179.9, -17.2, -179.9, -17.0), "status", 300)).find("svg")
    (area,) = [r.attrs for r in svg.find_all("rect") if "stroke-dasharray" in r.attrs]
    assert (area["x"], area["width"]) == ("0", "300")  # the recipe's area, across 180 too


def test_hostile_label_text_is_escaped(built: SimpleNamespace, reviewed: SimpleNamespace) -> None:
    for page in (built.html, reviewed.html):
        assert HOSTILE not in page and page.count("<script") == 1  # only the page's own
        assert "&lt;script&gt;document.body.dataset.pwned" in page
    doc = parse(reviewed.html)
    assert any(HOSTILE in t.text() for t in doc.find_all("span", class_="tag"))  # shown as text
    edited = doc.by_id("gallery").find_all("ul", class_="captions")
    assert any(li.text().startswith(HOSTILE_CAPTION) for ul in edited for li in ul.find_all("li"))


def test_review_statistics(reviewed: SimpleNamespace) -> None:
    summary = parse(reviewed.html).by_id("review-summary").text()
    assert summary == "3 reviewed: 2 accepted, 1 rejected; captions edited on 1, QA on 0"
    stats = parse(reviewed.html).by_id("review-stats").text()
    assert "captioner" in stats and "67%" in stats


def _chromium(page: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    if CHROMIUM is None:
        pytest.fail("chromium is not installed: `make chromium` (or apt-get install chromium)")
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        "--window-size=1280,2400",
        f"--user-data-dir={tmp}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=10000",
        *args,
        page.as_uri(),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_chromium_loads_the_page_and_the_screenshot_shows_map_and_gallery(
    reviewed: SimpleNamespace, tmp_path: Path
) -> None:
    page = reviewed.out / "report.html"
    dom = _chromium(page, tmp_path / "a", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = parse(dom.stdout).find("body").attrs
    assert body.get("data-ready") == "1" and "data-pwned" not in body
    assert body["data-images"] == body["data-decoded"] == "24"
    console = [ln for ln in dom.stderr.splitlines() if ":CONSOLE" in ln]
    assert console == [], console  # no error, no CSP violation, no log at all
    assert dom.stdout.count("<script") == 1

    shot = tmp_path / "report.png"
    res = _chromium(page, tmp_path / "b", f"--screenshot={shot}")
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    for name in ("map", "gallery"):
        x, y, w, h = (int(v) for v in body[f"data-{name}"].split(","))
        area = pixels[y : min(y + h, 2400), x : x + w]
        assert area.size and area.std() > 20, (name, area.std())
    x, y, w, h = (int(v) for v in body["data-map"].split(","))
    r, g, b = (pixels[y : y + h, x : x + w, i] for i in range(3))
    assert ((g > r + 40) & (g > b + 10)).sum() > 500  # kept tiles: green
    assert ((b > r + 60) & (b > g + 20)).sum() > 500  # train split: blue


def test_the_browser_check_sees_a_broken_page(reviewed: SimpleNamespace, tmp_path: Path) -> None:
    """The same harness on a copy with one image's data damaged and an image from the
    network added: it counts the image that did not decode and logs the CSP refusal."""
    page = reviewed.html.replace(";base64,", ";base64,AAAA", 1)
    page = page.replace("<h2>Gallery</h2>", '<h2>Gallery</h2><img src="https://example.org/x.png">')
    broken = tmp_path / "broken.html"
    broken.write_text(page)
    dom = _chromium(broken, tmp_path / "c", "--dump-dom")
    body = parse(dom.stdout).find("body").attrs
    assert (body["data-images"], body["data-decoded"]) == ("25", "23")
    assert any(
        ":CONSOLE" in ln and "Content Security Policy" in ln for ln in dom.stderr.splitlines()
    )


def test_report_bad_input(tmp_path: Path) -> None:
    for folder in (tmp_path, tmp_path / "missing"):
        res = run_main("report", str(folder))
        assert res.returncode == 2
        assert f"{folder} holds no finished build (no manifest.duckdb)" in res.stderr
        assert "build-dataset run RECIPE --output" in res.stderr


def test_report_refuses_a_negative_gallery(built: SimpleNamespace) -> None:
    res = run_main("report", str(built.out), "--gallery", "-1")
    assert res.returncode == 2 and "--gallery -1" in res.stderr


def test_a_report_that_cannot_be_written_does_not_fail_the_build(
    built: SimpleNamespace, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    shutil.copytree(built.out, out)
    (out / "report.html").unlink()
    (out / "report.html").mkdir()
    (out / "report.html" / "x").write_text("a folder where the report goes")
    res = run_cli("run", built.args[0], "--output", str(out), "--no-progress", *built.args[1:])
    assert res.returncode == 0, res.stderr[-2000:]
    assert re.search(r"the report could not be written \(\w+Error", res.stderr)
    assert "resume: 13 shards complete already" in res.stderr
    assert not list(out.glob("*.tmp-*"))


def test_a_large_map_draws_every_tile_where_its_box_says(tmp_path: Path) -> None:
    """Over 5,000 tiles the map's rectangles (no tooltips) are formatted in one pass: each is
    where the per-tile formula puts it, by group, across the antimeridian too."""
    import math

    from geoweave.manifests.report_data import Footprint
    from geoweave.manifests.report_svg import footprint_map

    rng = np.random.default_rng(3)
    tiles = []
    for i in range(6000):
        w, s = 179.0 + rng.random() * 2, -17 + rng.random()  # both sides of 180
        e = w + 0.01 + rng.random() * 0.05
        w, e = (w - 360 if w > 180 else w), (e - 360 if e > 180 else e)
        tiles.append(Footprint(w, s, e, s + 0.02, ["kept", "rejected"][i % 2], None,
                               10.0 * (1 + i % 3), f"k{i:04d}", None))  # fmt: skip
    tiles.sort(key=lambda f: -f.gsd_m)  # coarse first, as gather orders them
    svg = parse(footprint_map(tiles, None, "status")).find("svg")
    groups = [g for g in svg.find_all("g") if "data-gsd" in g.attrs]
    drawn = [[r.attrs for r in g.find_all("rect")] for g in groups]
    assert sum(len(d) for d in drawn) == 6000

    def n(x: float) -> str:
        return f"{x:.1f}".rstrip("0").rstrip(".")

    boxes = [(f.west, f.south, f.east + 360 if f.east < f.west else f.east, f.north)
             for f in tiles]  # fmt: skip
    boxes = [(w + 360, s, e + 360, no) if w < 0 else (w, s, e, no) for w, s, e, no in boxes]
    west, north = min(b[0] for b in boxes), max(b[3] for b in boxes)
    south, east = min(b[1] for b in boxes), max(b[2] for b in boxes)
    kx = math.cos(math.radians((south + north) / 2))
    scale = min(520 / ((east - west) * kx), 560 / (north - south))
    want: dict[tuple[str, str], list[dict[str, str]]] = {}
    for f, b in zip(tiles, boxes, strict=True):
        want.setdefault((n(f.gsd_m), STATUS_FILL[f.status]), []).append({
            "x": n((b[0] - west) * kx * scale), "y": n((north - b[3]) * scale),
            "width": n(max((b[2] - b[0]) * kx * scale, 0.5)),
            "height": n(max((b[3] - b[1]) * scale, 0.5)),
        })  # fmt: skip
    got = {(g.attrs["data-gsd"], g.attrs["fill"]): d for g, d in zip(groups, drawn, strict=True)}
    assert got == want


STATUS_FILL = {"kept": "#2ca25f", "rejected": "#bdbdbd"}


def test_histogram_bins_leave_out_nan_infinite_and_null_values() -> None:
    """Whole numbers spanning at most 20 get a bin each, other values 20 equal bins; NaN,
    infinities and NULL are in no bin (and set no edge)."""
    import duckdb

    from geoweave.manifests.report_stats import binned

    con = duckdb.connect()
    values = (
        "SELECT * FROM (VALUES ('a', 1.0), ('a', 2.0), ('a', 2.0), ('a', 'nan'::DOUBLE), "
        "('b', 0.0), ('b', 0.5), ('b', 10.0), ('b', 'inf'::DOUBLE), ('b', NULL), "
        "('c', '-inf'::DOUBLE)) t(g, v)"
    )
    bins = binned(con, values)
    assert list(bins) == ["a", "b"]  # "c" has no finite value
    assert bins["a"] == ([0.5, 1.5, 2.5], [1, 2], True)
    edges, counts, integer = bins["b"]
    assert not integer and len(counts) == 20 and edges[0] == 0.0 and edges[-1] == 10.0
    assert counts[0] == counts[1] == counts[-1] == 1 and sum(counts) == 3  # width 0.5
    assert con.execute("SELECT count(*) FROM duckdb_tables()").fetchone() == (0,)  # dropped
