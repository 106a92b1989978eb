"""The built-in components: importing this module registers them (a recipe names them)."""

from __future__ import annotations

from geoweave.captioning import llm, llm_qa, questions, templates
from geoweave.manifests import change, dedup, passes, same_ground, shared_captions
from geoweave.qa import faithfulness, filters, image_quality, qa_check, text_quality
from geoweave.sources import earthengine, imagery, stac, vector

BUILT_IN = (
    imagery,
    earthengine,
    stac,
    vector,
    templates,
    llm,
    llm_qa,
    questions,
    filters,
    image_quality,
    faithfulness,
    qa_check,
    text_quality,
    passes,
    dedup,
    same_ground,
    shared_captions,
    change,
)
