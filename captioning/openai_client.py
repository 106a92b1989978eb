"""A small client for OpenAI-compatible chat endpoints (vLLM, llama.cpp's server, Ollama, TGI,
``transformers serve``, hosted APIs), standard library only.

Every call has a timeout; 429, 5xx, timeouts and refused connections are retried with
exponential backoff (``Retry-After`` honoured up to 30 s); other HTTP errors fail at once. The
API key comes from an environment variable named by the recipe; it is sent in the header only
and never logged or stored.
"""

from __future__ import annotations

import json
import os
import random
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class LLMError(Exception):
    """A request that failed for good. ``retryable`` when nothing answered at all (refused,
    unreachable): the server is down and the shard should be retried later; an answer that
    stayed wrong (429, 5xx, a stall, not JSON) fails only its own request."""

    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class Endpoint:
    base_url: str
    api_key_env: str | None = None
    timeout_s: float = 60.0
    retries: int = 3
    backoff_s: float = 0.5

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def chat(self, payload: dict[str, Any]) -> dict[str, Any]:
        """POST ``/chat/completions``; the decoded reply, after retries."""
        url = self.base_url.rstrip("/") + "/chat/completions"
        body = json.dumps(payload).encode()
        last, down = "no attempt", False
        for attempt in range(self.retries + 1):
            wait = self.backoff_s * 2**attempt * (0.5 + random.random())
            try:
                request = urllib.request.Request(url, body, self._headers(), method="POST")
                with urllib.request.urlopen(request, timeout=self.timeout_s) as reply:
                    data: dict[str, Any] = json.loads(reply.read())
                    return data
            except urllib.error.HTTPError as e:
                detail = e.read()[:300].decode(errors="replace")
                last = f"HTTP {e.code} from {url}: {detail}"
                if e.code not in RETRY_STATUS:
                    raise LLMError(last, retryable=False) from None
                wait = max(wait, min(30.0, _retry_after(e.headers.get("Retry-After"))))
                down = False
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
                reason = getattr(e, "reason", e)
                last, down = f"{url}: {reason}", not _is_timeout(reason)
            except ValueError as e:  # not JSON
                last, down = f"{url} answered with something that is not JSON ({e})", False
            if attempt < self.retries:
                time.sleep(wait)
        raise LLMError(f"{last} (after {self.retries + 1} attempts)", retryable=down)


def _is_timeout(reason: object) -> bool:
    return isinstance(reason, TimeoutError) or "timed out" in str(reason)


def _retry_after(value: str | None) -> float:
    try:
        return float(value) if value else 0.0
    except ValueError:
        return 0.0


def reply_text(reply: dict[str, Any]) -> str:
    """The message text of a chat completion reply."""
    try:
        text = reply["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as e:
        raise LLMError(f"the reply has no message ({e}): {str(reply)[:200]}", False) from None
    if not isinstance(text, str):
        raise LLMError(f"the reply's message is not text: {str(text)[:200]}", False)
    return text
