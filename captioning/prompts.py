"""Versioned prompt templates, one YAML file each (``captioning/prompt_files/*.yaml``, or a user's).

A prompt file has ``name``, ``version``, ``task`` (short, detailed, rewrite, qa), a ``system``
text, a ``user`` template with ``{placeholders}``, and few-shot ``examples`` (the placeholder
values and the ``answer``). Its versioned name, ``{name}_v{version}``, is what every text
records, so a changed prompt is a new version and never mixes with the old one in a cache or a
corpus. Placeholders are filled in one pass: a value (a tile's JSON, holding untrusted names)
is never scanned for placeholders itself.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from geoweave.errors import FatalError

SHIPPED = Path(__file__).with_name("prompt_files")
TASKS = ("short", "detailed", "rewrite", "qa")
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Prompt:
    name: str
    version: int
    task: str
    system: str
    user: str
    examples: tuple[dict[str, str], ...] = ()

    @property
    def versioned(self) -> str:
        return f"{self.name}_v{self.version}"

    @property
    def placeholders(self) -> set[str]:
        return set(_PLACEHOLDER.findall(self.user))

    def fill(self, values: dict[str, str]) -> str:
        """The user template with its placeholders replaced (all must be given)."""
        missing = self.placeholders - set(values)
        if missing:
            raise ValueError(f"prompt {self.versioned} needs {sorted(missing)}")
        return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), self.user)

    def messages(self, **values: str) -> list[dict[str, str]]:
        """Chat messages: the system text, each example as a user/assistant turn, then the
        filled user template."""
        out = [{"role": "system", "content": self.system.strip()}]
        for ex in self.examples:
            shown = {k: v for k, v in ex.items() if k != "answer"}
            out.append({"role": "user", "content": self.fill({**values, **shown}).strip()})
            out.append({"role": "assistant", "content": ex["answer"].strip()})
        out.append({"role": "user", "content": self.fill(values).strip()})
        return out


def read_prompt(path: Path) -> Prompt:
    """A prompt file, checked: bad fields are reported with the file named (exit 2)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        prompt = Prompt(
            name=str(data["name"]),
            version=int(data["version"]),
            task=str(data["task"]),
            system=str(data["system"]),
            user=str(data["user"]),
            examples=tuple(
                {str(k): str(v) for k, v in ex.items()} for ex in data.get("examples") or []
            ),
        )
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise FatalError(
            f"prompt file {path}: {type(e).__name__}: {e}; it needs name, version, task, "
            "system, user (and optional examples)"
        ) from None
    if prompt.task not in TASKS:
        raise FatalError(f"prompt file {path}: task {prompt.task!r} is not one of {TASKS}")
    for i, ex in enumerate(prompt.examples):
        if "answer" not in ex:
            raise FatalError(f"prompt file {path}: example {i + 1} has no answer")
    return prompt


@functools.cache
def shipped_prompts() -> dict[str, Prompt]:
    """The prompts that ship with geoweave, by versioned name."""
    prompts = [read_prompt(p) for p in sorted(SHIPPED.glob("*.yaml"))]
    return {p.versioned: p for p in prompts}


def get_prompt(name_or_path: str) -> Prompt:
    """A shipped prompt by versioned name (``caption_short_v1``) or a prompt file's path."""
    shipped = shipped_prompts()
    if name_or_path in shipped:
        return shipped[name_or_path]
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return read_prompt(path)
    raise FatalError(
        f"unknown prompt {name_or_path!r}: use one of {sorted(shipped)} or a prompt file's path"
    )


def prompt_info(prompt: Prompt) -> dict[str, Any]:
    """What a generated text records of its prompt."""
    return {"prompt": prompt.versioned, "task": prompt.task}
