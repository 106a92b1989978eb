"""Long-lived Ray services a recipe's components ask for (the transformers captioner's model
actors): started on the driver once Ray is up and before any shard task, so the tasks cannot
take every CPU first, and held by the driver for the whole run.

A component opts in with a classmethod ``start_services(options)`` that returns a handle to
keep alive (or None), and options with a ``uses_ray_services`` property. Such a build runs no
early worker: the services exist only on Ray.
"""

from __future__ import annotations

from typing import Any

from geoweave.builders.recipe import Recipe
from geoweave.registry import CAPTIONERS, QUESTION_GENERATORS


def _components(recipe: Recipe) -> list[tuple[Any, Any]]:
    import geoweave.builders.components  # noqa: F401  (registers the built-ins)

    out = [(CAPTIONERS, recipe.captions, "captions")]
    if recipe.questions.enabled:
        out.append((QUESTION_GENERATORS, recipe.questions, "questions"))
    return [(reg.get(c.name), reg.options(c.name, c.options, where)) for reg, c, where in out]


def uses_ray_services(recipe: Recipe) -> bool:
    return any(getattr(opts, "uses_ray_services", False) for _, opts in _components(recipe))


def start_services(recipe: Recipe) -> list[Any]:
    """Start what the components need on the connected Ray; the handles to hold meanwhile.
    FatalError (before any shard) when the cluster cannot hold them."""
    handles = []
    seen: set[Any] = set()
    for cls, opts in _components(recipe):
        start = getattr(cls, "start_services", None)
        key = getattr(opts, "service_key", None)
        if start is None or not getattr(opts, "uses_ray_services", False) or key in seen:
            continue
        seen.add(key)  # the captioner and the QA generator on one model share its actors
        handle = start(opts)
        if handle is not None:
            handles.append(handle)
    return handles
