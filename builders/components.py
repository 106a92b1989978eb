"""The built-in components, each declared by name and the module that registers it: importing
this module makes a recipe's names known; a component's module is imported when first asked for
(``Registry.declare``)."""

from __future__ import annotations

from geoweave.registry import (
    CAPTIONERS,
    CORPUS_PASSES,
    FILTERS,
    IMAGERY_SOURCES,
    LABEL_SOURCES,
    QUESTION_GENERATORS,
    Registry,
)

BUILT_IN: dict[str, tuple[Registry, tuple[str, ...]]] = {
    "geoweave.sources.imagery": (IMAGERY_SOURCES, ("geotiff",)),
    "geoweave.sources.earthengine": (IMAGERY_SOURCES, ("earthengine",)),
    "geoweave.sources.stac": (IMAGERY_SOURCES, ("stac",)),
    "geoweave.sources.vector": (LABEL_SOURCES, ("vector",)),
    "geoweave.captioning.templates": (CAPTIONERS, ("template_v1",)),
    "geoweave.captioning.llm": (CAPTIONERS, ("llm_v1",)),
    "geoweave.captioning.questions": (QUESTION_GENERATORS, ("template_qa_v1",)),
    "geoweave.captioning.llm_qa": (QUESTION_GENERATORS, ("llm_qa_v1",)),
    "geoweave.qa.filters": (FILTERS, ("nodata_v1", "low_variance_v1", "min_labels_v1")),
    "geoweave.qa.image_quality": (FILTERS, ("cloud_v1", "saturation_v1")),
    "geoweave.qa.text_quality": (
        FILTERS,
        ("caption_length_v1", "repetition_v1", "garbage_text_v1"),
    ),
    "geoweave.qa.qa_check": (FILTERS, ("qa_check_v1",)),
    "geoweave.qa.faithfulness": (FILTERS, ("faithfulness_v1",)),
    "geoweave.manifests.passes": (CORPUS_PASSES, ("statistics_v1",)),
    "geoweave.manifests.dedup": (CORPUS_PASSES, ("near_duplicates_v1",)),
    "geoweave.manifests.same_ground": (CORPUS_PASSES, ("same_ground_v1",)),
    "geoweave.manifests.shared_captions": (CORPUS_PASSES, ("shared_captions_v1",)),
    "geoweave.manifests.change": (CORPUS_PASSES, ("change_v1",)),
}

for _module, (_registry, _names) in BUILT_IN.items():
    for _name in _names:
        _registry.declare(_name, _module)
