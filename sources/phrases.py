"""Turn OSM-style tags into English noun phrases ("residential road", "parking lot").

Shared by the text generators (`captioning/`) and their judges (`qa/faithfulness.py`), so a
caption is scored against the very vocabulary it was written from.

Captions and questions are built only from these phrases, so every noun a template writes can be
traced back to a tag of the sample.
"""

from __future__ import annotations

from geoweave.sources.labels import DEFAULT_TAG_KEYS

ROAD_CLASSES = {
    "motorway", "trunk", "primary", "secondary", "tertiary", "residential", "service",
    "unclassified", "living_street", "motorway_link", "trunk_link", "primary_link",
    "secondary_link", "tertiary_link", "track",
}  # fmt: skip

OVERRIDES = {
    ("building", "yes"): "building",
    ("building", "house"): "house",
    ("building", "apartments"): "apartment building",
    ("building", "garage"): "garage",
    ("building", "garages"): "row of garages",
    ("amenity", "parking"): "parking lot",
    ("amenity", "parking_space"): "parking space",
    ("highway", "motorway"): "motorway",
    ("highway", "motorway_link"): "motorway ramp",
    ("highway", "footway"): "footpath",
    ("highway", "cycleway"): "cycle path",
    ("highway", "path"): "path",
    ("highway", "steps"): "flight of steps",
    ("highway", "crossing"): "pedestrian crossing",
    ("highway", "traffic_signals"): "traffic light",
    ("highway", "turning_circle"): "turning circle",
    ("highway", "bus_stop"): "bus stop",
    ("highway", "pedestrian"): "pedestrian street",
    ("amenity", "fuel"): "gas station",
    ("railway", "tram"): "tram line",
    ("railway", "light_rail"): "light rail line",
    ("railway", "subway"): "subway line",
    ("aeroway", "terminal"): "terminal",
    ("railway", "rail"): "railway line",
    ("railway", "level_crossing"): "level crossing",
    ("natural", "water"): "body of water",
    ("natural", "wood"): "wood",
    ("landuse", "residential"): "residential area",
    ("landuse", "industrial"): "industrial area",
    ("landuse", "commercial"): "commercial area",
    ("landuse", "retail"): "retail area",
    ("leisure", "pitch"): "sports pitch",
    ("waterway", "river"): "river",
    ("power", "line"): "power line",
    ("power", "tower"): "power tower",
}

# Tag values that say nothing visible on their own.
UNINFORMATIVE = {"no", "none", "unknown", "fixme", "yes_and_no"}
# Keys that are attributes of another feature, not features themselves.
ATTRIBUTE_KEYS = {"surface", "bridge", "parking", "sport", "crop", "wetland"}


def phrase(key: str, value: str) -> str | None:
    """The noun phrase for one tag, or None when the tag names nothing visible."""
    value = value.strip().lower()
    if not value or value in UNINFORMATIVE or key in ATTRIBUTE_KEYS or ";" in value:
        return None
    if (key, value) in OVERRIDES:
        return OVERRIDES[(key, value)]
    words = value.replace("_", " ")
    if key == "building":
        return "building" if value == "yes" else f"{words} building"
    if key == "highway":
        return f"{words.removesuffix(' link')} road" if value in ROAD_CLASSES else words
    if key in ("landuse", "man_made", "aeroway", "water") and value in ("yes",):
        return None
    if value == "yes":
        return key.replace("_", " ")
    return words


_ORDER = {k: i for i, k in enumerate(DEFAULT_TAG_KEYS)}


def element_phrase(tags: dict[str, str]) -> str | None:
    """The phrase of an element from its most telling tag, in ``DEFAULT_TAG_KEYS`` order.

    Other keys (free-text attributes of vector files, names) never become nouns.
    """
    for key in sorted(tags.keys() & _ORDER.keys(), key=_ORDER.__getitem__):
        p = phrase(key, tags[key])
        if p:
            return p
    return None


def plural(noun: str, n: int) -> str:
    if n == 1:
        return noun
    if " of " in noun:
        first, rest = noun.split(" of ", 1)
        return f"{plural(first, n)} of {rest}"
    last = noun.rsplit(" ", 1)[-1]
    head = noun[: len(noun) - len(last)]
    if last.endswith(("s", "sh", "ch", "x")):
        return f"{head}{last}es"
    if last.endswith("y") and last[-2:-1] not in "aeiou":
        return f"{head}{last[:-1]}ies"
    return f"{head}{last}s"


def a(noun: str) -> str:
    return f"an {noun}" if noun[0] in "aeiou" else f"a {noun}"
