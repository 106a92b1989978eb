"""qa_check_v1: LLM question-answer pairs checked against the labels."""

from __future__ import annotations

from geoweave.qa.qa_check import QACheckFilter
from geoweave.record import QAPair, Sample
from geoweave.registry import NoOptions
from geoweave.tile import Tile


def _el(key: str, value: str) -> dict[str, object]:
    return {"id": "w1", "source": "osm", "tags": {key: value}, "geom_type": "polygon",
            "coverage_px": 10.0, "coverage_frac": 0.1, "area_m2": 1.0, "length_m": 0.0,
            "position": "centre", "clipped": False}  # fmt: skip


def _pair(q: str, a: str, kind: str = "llm") -> QAPair:
    return QAPair(question=q, answer=a, kind=kind, verified=kind != "llm")


def test_presence_counts_and_land_cover_answers_are_checked() -> None:
    s = Sample(Tile("k", "img", "EPSG:32610", 10.0, 32, 0, 0))
    s.osm = [_el("building", "house"), _el("building", "house"), _el("highway", "primary")]  # type: ignore[list-item]
    s.landcover = {"Built-up": 0.7, "Tree cover": 0.3}
    s.qa = [
        _pair("Is there a road in the image?", "Yes, on the left."),  # true
        _pair("Is there a parking lot?", "Yes."),  # false: none
        _pair("Are there any lakes?", "No."),  # true
        _pair("How many houses are there?", "Two houses."),  # true
        _pair("How many buildings are visible?", "3"),  # false: 2
        _pair("What is the dominant land cover?", "Mostly urban area."),  # true: built-up
        _pair("What colour are the roofs?", "Red."),  # cannot be checked
        _pair("How many houses?", "Five.", kind="count"),  # a template pair: left alone
    ]
    assert QACheckFilter(NoOptions()).check(s) is None
    got = [(p.get("check"), p["verified"]) for p in s.qa]
    assert got == [
        ("presence", True), ("presence", False), ("presence", True), ("count", True),
        ("count", False), ("land_cover", True), ("unchecked", False), (None, True),
    ]  # fmt: skip
    assert s.scores["qa_verified"] == round(4 / 7, 4)
