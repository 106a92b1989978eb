"""A crash-safe store of LLM responses, shared by every worker of a build and across runs.

One file per response, named by the SHA-256 of what decides it: the model, the versioned
prompt, the generation parameters and the exact rendered messages. A rerun, or a resume after
SIGKILL, finds every response that had arrived and sends no request twice.

- Each response is written as it arrives, through a temporary name, fsync and rename
  (``geoweave.files``): a reader sees a whole entry or none, after a crash too.
- Several processes or nodes (a shared file system) may write the same key at once: each
  renames its own complete file; the contents are equivalent, the last rename wins.
- Files sit in 256 sub-folders by the key's first two hex digits, so no folder grows huge.
- A damaged entry (a truncated copy, a disk error) is reported, counted as a miss and
  rewritten. Secrets never enter a key or an entry: the API key is not a parameter.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geoweave.files import write_text

log = logging.getLogger("geoweave")

FORMAT = 1


@dataclass(frozen=True)
class Request:
    """Everything that decides a response, and nothing else (no endpoint, no key)."""

    model: str
    prompt: str  # the prompt's versioned name, e.g. caption_short_v1
    params: tuple[tuple[str, Any], ...]  # generation parameters, sorted by name
    messages: tuple[tuple[str, str], ...]  # (role, content) as sent

    @classmethod
    def of(
        cls, model: str, prompt: str, params: dict[str, Any], messages: list[dict[str, str]]
    ) -> Request:
        return cls(
            model,
            prompt,
            tuple(sorted(params.items())),
            tuple((m["role"], m["content"]) for m in messages),
        )

    def fields(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "model": self.model,
            "prompt": self.prompt,
            "params": dict(self.params),
            "messages": [list(m) for m in self.messages],
        }

    @property
    def key(self) -> str:
        canonical = json.dumps(self.fields(), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()


class ResponseCache:
    """``get`` and ``put`` of responses by request, in a folder (``OUT/_llm_cache`` or a shared
    one named by the recipe)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.hits = self.misses = self.damaged = 0

    def path(self, request: Request) -> Path:
        key = request.key
        return self.root / key[:2] / f"{key}.json"

    def get(self, request: Request) -> str | None:
        """The stored response text, or None (a miss)."""
        path = self.path(request)
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            text = entry["response"]
            if entry.get("request") != request.fields() or not isinstance(text, str):
                raise ValueError("the entry does not hold this request")
        except FileNotFoundError:
            self.misses += 1
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("LLM cache: ignoring the damaged entry %s (%s); it is rewritten", path, e)
            self.damaged += 1
            self.misses += 1
            return None
        self.hits += 1
        return text

    def put(self, request: Request, response: str, usage: dict[str, Any] | None = None) -> None:
        """Store a response durably (temporary name, fsync, rename)."""
        path = self.path(request)
        path.parent.mkdir(parents=True, exist_ok=True)
        entry: dict[str, Any] = {"request": request.fields(), "response": response}
        entry["usage"] = usage or {}
        entry["stored"] = time.time()
        write_text(path, json.dumps(entry, ensure_ascii=False))
