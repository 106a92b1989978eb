"""How faithful a caption is to the labels it was written from: CHAIR-style, no vision model.

A caption's *mentions* are the vocabulary phrases it names, matched as whole phrases, longest
first, singular or plural: "parking lot" is one mention and "park" is not found inside it. The
vocabulary is the tag -> phrase table the templates write from (``sources/phrases.py``) over
common OSM values, the land-cover class names of the shipped legends, a few synonyms ("street",
"forest", "farmland"), and the tile's own label phrases (any vocabulary a label source has).

A mention is *supported* when the tile's labels hold its concept or a narrower one: "road" is
supported by a residential road and "building" by a house, but "secondary road" is not
supported by a primary road, nor "river" by a lake. Land cover supports its class (and the
class's synonyms) when it covers at least ``MIN_LANDCOVER`` of the tile.

Per caption: ``precision`` = supported mentions / mentions (1.0 when it mentions nothing),
``recall`` = labels mentioned / visible labels (1.0 when there are none), and the list of
unsupported mentions.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from geoweave.record import LabelElement, Sample
from geoweave.registry import FILTERS
from geoweave.sources.landcover import load_legend, shipped_legends
from geoweave.sources.phrases import OVERRIDES, ROAD_CLASSES, element_phrase, phrase, plural

MIN_LANDCOVER = 0.05  # a class under 5% of the tile does not support a mention of it

# Common values of the tag keys geoweave indexes: mentions of these can be found (and found
# unsupported) in any caption, whatever the tile's labels.
COMMON_VALUES = {
    "building": "yes house apartments garage garages commercial industrial retail school church "
    "warehouse office hospital hotel shed roof farm barn greenhouse farmhouse hangar",
    "highway": " ".join(sorted(ROAD_CLASSES)) + " footway cycleway path steps pedestrian",
    "landuse": "residential industrial commercial retail farmland forest grass meadow cemetery "
    "orchard vineyard quarry railway construction allotments farmyard",
    "natural": "water wood scrub grassland beach sand wetland bare_rock heath cliff glacier "
    "peak hill ridge valley cape",
    "leisure": "park pitch playground garden golf_course stadium swimming_pool nature_reserve "
    "marina",
    "amenity": "parking school hospital university place_of_worship fuel",
    "aeroway": "runway taxiway apron aerodrome helipad hangar terminal",
    "waterway": "river stream canal ditch dam",
    "railway": "rail station platform tram light_rail subway",
    "man_made": "pier bridge breakwater storage_tank water_tower wastewater_plant",
    "power": "line tower substation plant generator",
}

# phrase -> the broader concept it is a kind of ("house" is a building).
BROADER = {
    "house": "building", "garage": "building", "row of garages": "building", "shed": "building",
    "apartment building": "building", "motorway": "road", "motorway ramp": "road",
    "footpath": "path", "cycle path": "path", "river": "water", "stream": "water",
    "canal": "water", "lake": "water", "pond": "water", "reservoir": "water",
    "water courses": "water", "water bodies": "water", "sea and ocean": "water",
    "mangroves": "trees", "railway line": "railway", "tram line": "railway",
    "sports pitch": "pitch", "hill": "terrain", "peak": "terrain", "ridge": "terrain",
    "valley": "terrain", "cliff": "terrain",
    "herbaceous wetland": "wetland", "residential area": "built-up area",
    "industrial area": "built-up area", "commercial area": "built-up area",
    "retail area": "built-up area", "continuous urban fabric": "built-up area",
    "discontinuous urban fabric": "built-up area",
}  # fmt: skip

# other wordings -> the vocabulary's phrase
SYNONYMS = {
    "street": "road", "highway": "road", "freeway": "motorway", "home": "house",
    "car park": "parking lot", "parking area": "parking lot",
    "forest": "trees", "wood": "trees", "woods": "trees", "woodland": "trees", "tree": "trees",
    "tree cover": "trees", "farmland": "cropland", "farm field": "cropland",
    "field": "cropland", "crop field": "cropland", "agricultural land": "cropland",
    "built-up": "built-up area", "urban area": "built-up area", "city": "built-up area",
    "town": "built-up area", "body of water": "water", "water body": "water",
    "permanent water bodies": "water", "lagoon": "water", "ocean": "water", "sea": "water",
    "bay": "water", "shrubs": "shrubland", "scrub": "shrubland", "bare ground": "bare land",
    "bare / sparse vegetation": "bare land", "sparse vegetation": "bare land",
    "snow": "snow and ice", "ice": "snow and ice", "meadow": "grassland", "grass": "grassland",
    "bush": "shrubland", "bushes": "shrubland", "shrub": "shrubland",
    "village": "built-up area", "hamlet": "built-up area", "settlement": "built-up area",
    "neighbourhood": "built-up area", "neighborhood": "built-up area", "suburb": "built-up area",
    "housing": "house", "homes": "house", "hillside": "hill", "hilltop": "hill",
    "mountain": "peak", "headland": "cape", "promontory": "cape",
    "petrol station": "gas station", "filling station": "gas station", "fuel station": "gas station",
    "dirt track": "track road", "dirt road": "track road", "farm track": "track road",
    "gravel road": "track road", "rail track": "railway line", "railway track": "railway line",
    "train track": "railway line", "rail line": "railway line", "tramway": "tram line",
    "tram track": "tram line", "terminal building": "terminal", "airport terminal": "terminal",
    "airport": "aerodrome", "airfield": "aerodrome",
}  # fmt: skip

# building=VALUE is "VALUE building"; a caption says just "warehouse" or "church".
SYNONYMS |= {v: f"{v} building" for v in ("school", "church", "warehouse", "office", "hospital",
                                          "hotel", "barn", "greenhouse", "farmhouse")}  # fmt: skip

# Generic nouns a caption uses for things of several kinds.
GENERIC = ("building", "road", "path", "water", "trees", "railway", "pitch", "built-up area",
           "wetland", "grassland", "cropland", "shrubland", "bare land", "lake", "pond",
           "reservoir")  # fmt: skip


def concept(p: str) -> str:
    """The vocabulary's phrase for a wording: synonyms folded, lower case."""
    p = p.lower()
    return SYNONYMS.get(p, p)


def broader(p: str) -> frozenset[str]:
    """A concept and every concept it is a kind of: "residential road" -> road; "house" ->
    building; a multi-word phrase is also a kind of its last word ("commercial building")."""
    return _broader(concept(p))


@functools.lru_cache(maxsize=8192)  # a tile's labels repeat across a shard; OSM text is open
def _broader(start: str) -> frozenset[str]:
    out: set[str] = set()
    todo = [start]
    while todo:
        c = todo.pop()
        if c in out:
            continue
        out.add(c)
        if c in BROADER:
            todo.append(BROADER[c])
        last = c.rsplit(" ", 1)[-1]
        if " " in c and " of " not in c and last in _VOCAB_WORDS:
            todo.append(last)
    return frozenset(out)


@functools.cache
def _landcover_names() -> frozenset[str]:
    return frozenset(n.lower() for leg in shipped_legends() for n in load_legend(leg).values())


def _static_vocabulary() -> set[str]:
    vocab = set(OVERRIDES.values()) | set(GENERIC) | set(SYNONYMS) | set(BROADER)
    for key, values in COMMON_VALUES.items():
        vocab |= {p for v in values.split() if (p := phrase(key, v))}
    return vocab | set(_landcover_names())


_VOCAB_WORDS = {p for p in _static_vocabulary() if " " not in p}


def _alternation(phrases: Iterable[str]) -> tuple[re.Pattern[str], dict[str, str]]:
    """One regex for all phrases and their plurals, and form -> phrase. At each place it
    matches the longest form followed by a word boundary, as an alternation of the forms
    longest first would; written as a trie (shared prefixes once), so a caption is scanned
    in about 2 us instead of 20 (``re`` tries every alternative at every position)."""
    forms: dict[str, str] = {}
    for p in phrases:
        forms.setdefault(p, p)
        forms.setdefault(plural(p, 2), p)
    return re.compile(rf"(?<![\w-])(?:{_trie(forms)})(?![\w-])"), forms


def _trie(words: Iterable[str]) -> str:
    """A regex body matching exactly ``words``, longest first: one branch per next character,
    the end of a shorter word an optional (greedy, so tried last) tail."""
    root: dict[str, Any] = {}
    for w in words:
        node = root
        for ch in w:
            node = node.setdefault(ch, {})
        node[""] = {}

    def emit(node: dict[str, Any]) -> str:
        branches = [re.escape(ch) + emit(child) for ch, child in sorted(node.items()) if ch]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if "" in node else body

    return emit(root)


_STATIC, _STATIC_FORMS = _alternation(_static_vocabulary())


@dataclass
class Faithfulness:
    precision: float
    recall: float
    mentions: list[str] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)


def mentions(text: str, own: Sequence[str] = ()) -> list[str]:
    """The vocabulary phrases a text names, in order, as whole phrases, longest first; ``own``
    adds the tile's label phrases the static vocabulary lacks."""
    low = text.lower()
    found = [(m.start(), m.end(), _STATIC_FORMS[m.group(0)]) for m in _STATIC.finditer(low)]
    extra = [p for p in own if p not in _STATIC_FORMS]
    if extra:
        pattern, forms = _alternation(extra)
        found += [(m.start(), m.end(), forms[m.group(0)]) for m in pattern.finditer(low)]
    found.sort(key=lambda f: (f[0], -(f[1] - f[0])))
    out, end = [], -1
    for start, stop, p in found:  # longest first at each place, never overlapping
        if start >= end:
            out.append(p)
            end = stop
    return out


def label_concepts(
    elements: Iterable[LabelElement], landcover: Mapping[str, float]
) -> dict[str, frozenset[str]]:
    """Each visible label's phrase -> the concepts it supports (itself and broader ones)."""
    labels: dict[str, frozenset[str]] = {}
    for el in elements:
        p = element_phrase(el["tags"])
        if p:
            concepts = broader(p)
            if "building" not in el["tags"] and concept(p).endswith(" building"):
                # amenity=school: a "school", not a "building"
                concepts = frozenset({p, concept(p)})
            labels.setdefault(p, concepts)
    for name, frac in landcover.items():
        if frac >= MIN_LANDCOVER:
            labels.setdefault(name.lower(), broader(name))
    return labels


def supported_concepts(labels: Mapping[str, frozenset[str]]) -> set[str]:
    """Every concept the tile's labels support (``label_concepts``' values together)."""
    return set().union(*labels.values()) if labels else set()


def score(
    text: str, elements: Iterable[LabelElement], landcover: Mapping[str, float]
) -> Faithfulness:
    """Precision, recall and unsupported mentions of one caption against the tile's labels."""
    return score_against(text, label_concepts(elements, landcover))


def score_against(text: str, labels: Mapping[str, frozenset[str]]) -> Faithfulness:
    """``score`` with the tile's ``label_concepts`` worked out once for all its captions."""
    supported = supported_concepts(labels)
    found = mentions(text, own=list(labels))
    said = {concept(m) for m in found}
    unsupported = [m for m in found if concept(m) not in supported]
    recalled = [p for p, concepts in labels.items() if concepts & said]
    precision = 1.0 if not found else (len(found) - len(unsupported)) / len(found)
    recall = 1.0 if not labels else len(recalled) / len(labels)
    return Faithfulness(round(precision, 4), round(recall, 4), found, unsupported)


class FaithfulnessOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    min_precision: float = Field(
        0.5, ge=0, le=1, description="a caption under this precision is unfaithful"
    )
    action: Literal["flag", "reject"] = Field(
        "flag", description="flag: keep and mark unfaithful captions; reject: reject the sample"
    )


@FILTERS.add("faithfulness_v1")
class FaithfulnessFilter:
    """Scores every caption against the tile's labels (``score``); each caption records its
    ``precision``, ``recall``, ``unsupported`` mentions and ``faithful``; the sample's scores
    get the worst precision and the mean recall. ``action: reject`` rejects a sample with an
    unfaithful caption (reason ``unfaithful_caption``)."""

    name = "faithfulness_v1"
    stage: ClassVar[Literal["image", "text"]] = "text"
    Options = FaithfulnessOptions

    def __init__(self, opts: FaithfulnessOptions) -> None:
        self.min_precision, self.action = opts.min_precision, opts.action

    def check(self, sample: Sample) -> str | None:
        if not sample.captions:
            return None
        labels = label_concepts(sample.osm, sample.landcover)
        results = [score_against(c["text"], labels) for c in sample.captions]
        for cap, f in zip(sample.captions, results, strict=True):
            cap["precision"], cap["recall"], cap["unsupported"] = (
                f.precision,
                f.recall,
                f.unsupported,
            )
            cap["faithful"] = f.precision >= self.min_precision
        sample.scores["faithfulness"] = min(f.precision for f in results)
        sample.scores["faithfulness_recall"] = round(
            sum(f.recall for f in results) / len(results), 4
        )
        if self.action == "reject" and not all(c["faithful"] for c in sample.captions):
            return "unfaithful_caption"
        return None
