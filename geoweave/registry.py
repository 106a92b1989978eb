"""Versioned registries: a recipe names a component, the manifest records which one ran.

A component is a class registered under a versioned name (``template_v1``). Its options are a
pydantic model in the class attribute ``Options`` (none: no options), validated when the recipe
is loaded, so a bad option fails before any work starts and names its field.

A built-in is declared by name and module (``builders/components.py``) and its module imported
the first time a recipe asks for it: a template build does not import the LLM, Earth Engine or
STAC code (0.1 s of a build's start, before the first shard can run).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from geoweave.errors import FatalError

T = TypeVar("T")


class NoOptions(BaseModel):
    """The options of a component that takes none."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Registry:
    """Name -> component class. Names carry a version so old outputs stay explainable."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Any] = {}
        self._lazy: dict[str, str] = {}  # name -> the module whose import registers it

    def add(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            declared = self._lazy.get(name)
            if declared is not None and getattr(obj, "__module__", None) != declared:
                raise ValueError(f"{self.kind} {name!r} is a built-in (of {declared})")
            self._items[name] = obj
            return obj

        return deco

    def declare(self, name: str, module: str) -> None:
        """A component that ``module`` registers (``@add(name)``) when it is imported; the
        import waits for the first ``get(name)``."""
        self._lazy[name] = module

    def get(self, name: str) -> Any:
        if name not in self._items and name in self._lazy:
            importlib.import_module(self._lazy[name])
        try:
            return self._items[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; known: {self.names()}") from None

    def names(self) -> list[str]:
        return sorted(self._items.keys() | self._lazy.keys())

    def options(self, name: str, data: dict[str, Any] | None, where: str) -> BaseModel:
        """Validate ``data`` against the component's ``Options``; FatalError names the field."""
        try:
            cls = self.get(name)
        except KeyError as e:
            raise FatalError(f"{where}: {e.args[0]}") from None
        model: type[BaseModel] = getattr(cls, "Options", NoOptions)
        try:
            return model.model_validate(data or {})
        except ValidationError as e:
            lines = [f"{where}: invalid options for {self.kind} {name!r}"]
            for err in e.errors():
                field = ".".join(str(p) for p in err["loc"]) or "(options)"
                msg = "unknown option" if err["type"] == "extra_forbidden" else err["msg"]
                lines.append(f"  {where}.{field}: {msg}")
            raise FatalError("\n".join(lines)) from None

    def build(self, name: str, options: dict[str, Any] | None, *args: Any) -> Any:
        """An instance of the named component: ``cls.from_options(validated_options, *args)``
        when the class defines it, else ``cls(validated_options, *args)``."""
        cls = self.get(name)
        make = getattr(cls, "from_options", cls)
        return make(self.options(name, options, name), *args)


IMAGERY_SOURCES = Registry("imagery source")
LABEL_SOURCES = Registry("label source")
CAPTIONERS = Registry("captioner")
QUESTION_GENERATORS = Registry("question generator")
FILTERS = Registry("filter")
CORPUS_PASSES = Registry("corpus pass")


def load_plugins(plugins: Iterable[str]) -> None:
    """Import third-party component modules: a module name or a ``.py`` file.

    Importing the module runs its ``@REGISTRY.add(...)`` decorators. Called by the recipe loader
    and again in every worker process (a Ray worker starts with none of them imported).
    """
    for plugin in plugins:
        try:
            if plugin.endswith(".py"):
                path = Path(plugin)
                name = f"geoweave_plugin_{path.stem}"
                if name in sys.modules:
                    continue
                spec = importlib.util.spec_from_file_location(name, path)
                if spec is None or spec.loader is None or not path.is_file():
                    raise FileNotFoundError(f"no such file: {path}")
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                spec.loader.exec_module(module)
            else:
                importlib.import_module(plugin)
        except Exception as e:
            sys.modules.pop(f"geoweave_plugin_{Path(plugin).stem}", None)
            raise FatalError(
                f"plugins: cannot import {plugin} ({type(e).__name__}: {e}); give a module "
                "name on the Python path or a .py file relative to the recipe"
            ) from e
