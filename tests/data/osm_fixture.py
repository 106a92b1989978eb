"""Write a small, real OSM XML file around (-122.30, 37.80) for the OSM index tests.

Seeded and stdlib-only, so the file is the same on every machine. ``write_osm_xml`` returns
what it wrote (ids per kind, and each kept feature's expected geometry as a GeoJSON-like
mapping) so tests assert against the source of truth rather than against the index itself.

Usage: ``python tests/data/osm_fixture.py OUT.osm``
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

LON0, LAT0 = -122.30, 37.80
TIMESTAMP = "2024-05-01T12:00:00Z"

Coord = tuple[float, float]


class _Osm:
    """Collects nodes, ways and relations with increasing ids, then writes them sorted."""

    def __init__(self) -> None:
        self.nodes: list[tuple[int, Coord, dict[str, str]]] = []
        self.ways: list[tuple[int, list[int], dict[str, str]]] = []
        self.relations: list[tuple[int, list[tuple[int, str]], dict[str, str]]] = []

    def node(self, lon: float, lat: float, tags: dict[str, str] | None = None) -> int:
        node_id = 1000 + len(self.nodes)
        self.nodes.append((node_id, (round(lon, 7), round(lat, 7)), tags or {}))
        return node_id

    def way(self, coords: list[Coord], tags: dict[str, str], closed: bool = False) -> int:
        refs = [self.node(lon, lat) for lon, lat in coords]
        if closed:
            refs.append(refs[0])
        way_id = 500 + len(self.ways)
        self.ways.append((way_id, refs, tags))
        return way_id

    def relation(self, members: list[tuple[int, str]], tags: dict[str, str]) -> int:
        rel_id = 90 + len(self.relations)
        self.relations.append((rel_id, members, tags))
        return rel_id

    def xml(self) -> str:
        common = f'version="1" timestamp="{TIMESTAMP}" uid="1" user="fixture" changeset="1"'
        lines = [
            '<?xml version="1.0" encoding="UTF-8"?>',
            '<osm version="0.6" generator="geoweave">',
        ]
        for nid, (lon, lat), tags in self.nodes:
            lines.append(
                f'  <node id="{nid}" {common} lat="{lat:.7f}" lon="{lon:.7f}"{_close(tags)}'
            )
            lines.extend(_tags(tags, "node"))
        for wid, refs, tags in self.ways:
            lines.append(f'  <way id="{wid}" {common}>')
            lines.extend(f'    <nd ref="{ref}"/>' for ref in refs)
            lines.extend(_tags(tags, "way", always_close=True))
        for rid, members, tags in self.relations:
            lines.append(f'  <relation id="{rid}" {common}>')
            lines.extend(f'    <member type="way" ref="{w}" role="{r}"/>' for w, r in members)
            lines.extend(_tags(tags, "relation", always_close=True))
        lines.append("</osm>")
        return "\n".join(lines) + "\n"


def _close(tags: dict[str, str]) -> str:
    return ">" if tags else "/>"


def _tags(tags: dict[str, str], element: str, always_close: bool = False) -> list[str]:
    out = [f"    <tag k={quoteattr(k)} v={quoteattr(v)}/>" for k, v in tags.items()]
    if tags or always_close:
        out.append(f"  </{element}>")
    return out


def _pt(lon: float, lat: float) -> Coord:
    """A coordinate rounded as OSM stores it (7 decimals), so expected geometries match."""
    return (round(lon, 7), round(lat, 7))


def _square(lon: float, lat: float, half: float) -> list[Coord]:
    """Counter-clockwise square ring (without the closing point) centred on lon/lat."""
    return [
        _pt(lon - half, lat - half),
        _pt(lon + half, lat - half),
        _pt(lon + half, lat + half),
        _pt(lon - half, lat + half),
    ]


def _polygon(*rings: list[Coord]) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": [[*ring, ring[0]] for ring in rings]}


def write_osm_xml(path: Path, seed: int = 0) -> dict[str, Any]:
    """Write the fixture OSM XML file to ``path``.

    Args:
        path: where to write the ``.osm`` file.
        seed: seed for the jitter of building positions.

    Returns:
        A dict with the ids per kind (``buildings``, ``park``, ``pedestrian_area``, ``water``,
        ``highways``, ``highway_ring``, ``crossing_line``, ``amenities``, ``dropped``,
        ``missing_node_way``, ``missing_node_area``), ``geometries`` (id -> GeoJSON-like mapping of every kept
        feature), ``tags`` (id -> the tags that must be kept) and ``bbox``.
    """
    rng = random.Random(seed)
    osm = _Osm()
    geoms: dict[str, dict[str, Any]] = {}
    kept_tags: dict[str, dict[str, str]] = {}

    def keep(fid: str, geom: dict[str, Any], tags: dict[str, str]) -> str:
        geoms[fid], kept_tags[fid] = geom, tags
        return fid

    buildings = []
    for i in range(5):
        lon = LON0 - 0.008 + 0.0031 * i + rng.uniform(-0.0002, 0.0002)
        lat = LAT0 - 0.006 + rng.uniform(-0.0002, 0.0002)
        ring = _square(lon, lat, 0.0002)
        wid = osm.way(ring, {"building": "yes", "name": f"House {i}", "source": "survey"}, True)
        buildings.append(keep(f"w{wid}", _polygon(ring), {"building": "yes"}))

    park_ring = [
        _pt(LON0 + 0.002, LAT0 + 0.002),
        _pt(LON0 + 0.006, LAT0 + 0.002),
        _pt(LON0 + 0.004, LAT0 + 0.006),
    ]
    park_tags = {"leisure": "park", "landuse": "grass", "name": "Fixture Park"}
    park = keep(
        f"w{osm.way(park_ring, park_tags, True)}",
        _polygon(park_ring),
        {"leisure": "park", "landuse": "grass"},
    )

    plaza = _square(LON0 - 0.0045, LAT0 + 0.0045, 0.0003)
    plaza_id = osm.way(plaza, {"highway": "pedestrian", "area": "yes"}, True)
    pedestrian_area = keep(f"w{plaza_id}", _polygon(plaza), {"highway": "pedestrian"})

    outer, inner = (
        _square(LON0 - 0.0045, LAT0 - 0.0015, 0.002),
        _square(LON0 - 0.0045, LAT0 - 0.0015, 0.001),
    )
    members = [(osm.way(outer, {}, True), "outer"), (osm.way(inner, {}, True), "inner")]
    rel = osm.relation(
        members, {"type": "multipolygon", "natural": "water", "name": "Fixture Lake"}
    )
    water = keep(f"r{rel}", _polygon(outer, inner), {"natural": "water"})

    highways = []
    for k, (start, end) in enumerate(
        [
            ((-0.0095, 0.0005), (0.0095, 0.0009)),
            ((0.0005, -0.0095), (0.0011, 0.0095)),
            ((0.007, -0.008), (0.009, -0.001)),
        ]
    ):
        coords = [_pt(LON0 + start[0], LAT0 + start[1]), _pt(LON0 + end[0], LAT0 + end[1])]
        tags = {"highway": ["primary", "residential", "service"][k], "name": f"Road {k}"}
        line = {"type": "LineString", "coordinates": coords}
        highways.append(keep(f"w{osm.way(coords, tags)}", line, {"highway": tags["highway"]}))

    ring = _square(LON0 + 0.0065, LAT0 + 0.0075, 0.0008)
    ring_id = osm.way(ring, {"highway": "residential", "name": "Ring Road"}, True)
    highway_ring = keep(
        f"w{ring_id}",
        {"type": "LineString", "coordinates": [*ring, ring[0]]},
        {"highway": "residential"},
    )

    # Crosses lon -122.298: it lies in two cells of 0.001 degrees.
    crossing = [_pt(LON0 + 0.00125, LAT0 + 0.0085), _pt(LON0 + 0.00275, LAT0 + 0.0086)]
    cross_id = osm.way(crossing, {"railway": "rail"})
    crossing_line = keep(
        f"w{cross_id}", {"type": "LineString", "coordinates": crossing}, {"railway": "rail"}
    )

    amenities = []
    for i, value in enumerate(["cafe", "bench", "post_box"]):
        lon, lat = _pt(LON0 - 0.006 + 0.002 * i, LAT0 + 0.0085)
        node_tags = {"amenity": value, "name": f"Spot {i}", "opening_hours": "24/7"}
        nid = osm.node(lon, lat, node_tags)
        amenities.append(
            keep(
                f"n{nid}",
                {"type": "Point", "coordinates": (lon, lat)},
                {"amenity": value},
            )
        )

    dropped = [
        f"w{osm.way([(LON0 + 0.008, LAT0), (LON0 + 0.009, LAT0 + 0.001)], {'name': 'Nameless'})}",
        f"w{osm.way(_square(LON0 - 0.008, LAT0 + 0.002, 0.0003), {'source': 'bing'}, True)}",
        f"n{osm.node(LON0 + 0.001, LAT0 - 0.004, {'name': 'Just a name'})}",
    ]
    missing = osm.way(
        [(LON0 - 0.001, LAT0 - 0.009), (LON0 + 0.001, LAT0 - 0.009)], {"highway": "service"}
    )
    osm.ways[-1][1].append(999_999)  # a node that is not in the file, as in clipped extracts
    hut = osm.way(_square(LON0 + 0.008, LAT0 - 0.008, 0.0002), {"building": "hut"}, True)
    osm.ways[-1][1].insert(2, 999_998)  # no area can be built without it

    Path(path).write_text(osm.xml(), encoding="utf-8")
    return {
        "buildings": buildings,
        "park": park,
        "pedestrian_area": pedestrian_area,
        "water": water,
        "highways": highways,
        "highway_ring": highway_ring,
        "crossing_line": crossing_line,
        "amenities": amenities,
        "dropped": dropped,
        "missing_node_way": f"w{missing}",
        "missing_node_area": f"w{hut}",
        "geometries": geoms,
        "tags": kept_tags,
        "bbox": (LON0 - 0.01, LAT0 - 0.01, LON0 + 0.01, LAT0 + 0.01),
    }


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/data/osm_fixture.py OUT.osm")
    summary = write_osm_xml(Path(sys.argv[1]))
    print({k: v for k, v in summary.items() if k not in ("geometries", "tags")})
