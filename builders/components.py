"""The built-in components: importing this module registers them (a recipe names them)."""

from __future__ import annotations

from geoweave.captioning import llm, llm_qa, questions, templates
from geoweave.manifests import dedup, passes, same_ground
from geoweave.qa import faithfulness, filters, qa_check
from geoweave.sources import imagery, vector

BUILT_IN = (
    imagery,
    vector,
    templates,
    llm,
    llm_qa,
    questions,
    filters,
    faithfulness,
    qa_check,
    passes,
    dedup,
    same_ground,
)
