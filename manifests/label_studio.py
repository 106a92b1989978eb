"""Talking to a Label Studio server through ``label-studio-sdk`` (the ``review`` extra).

The server and the key come from the environment, never from a recipe, a log or the manifest:
``LABEL_STUDIO_URL`` (e.g. ``http://127.0.0.1:8080``) and ``LABEL_STUDIO_API_KEY`` (a
personal access token, or a legacy token where the server enables them; the SDK tells them
apart). Each export is recorded in ``_reviews/exports.json`` (project id, server URL, time,
the keys sent) so ``review import`` knows where to read the annotations back from.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from geoweave.errors import FatalError
from geoweave.files import write_text
from geoweave.manifests.reviews import REVIEWS_DIR

URL_ENV, KEY_ENV = "LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY"


def client() -> Any:
    """A ``LabelStudio`` client for the server named by the environment."""
    url, key = os.environ.get(URL_ENV), os.environ.get(KEY_ENV)
    if not url or not key:
        raise FatalError(
            f"set ${URL_ENV} and ${KEY_ENV} to reach a Label Studio server, "
            "or use --to-file / --from-file to go through files"
        )
    try:
        from label_studio_sdk import LabelStudio
    except ImportError:
        raise FatalError(
            "label-studio-sdk is not installed: pip install 'geoweave[review]'"
        ) from None
    return LabelStudio(base_url=url, api_key=key)


def _call(what: str, f: Any, *args: Any, **kwargs: Any) -> Any:
    """An SDK call; a refused key or an unreachable server is a clear error (exit 2)."""
    try:
        return f(*args, **kwargs)
    except Exception as e:  # httpx errors, the SDK's ApiError: the status and a short body
        status = getattr(e, "status_code", None)
        why = f"HTTP {status}" if status else f"{type(e).__name__}: {e}"
        raise FatalError(
            f"Label Studio at {os.environ.get(URL_ENV)} refused to {what} ({why}); check "
            f"${URL_ENV} and ${KEY_ENV}"
        ) from None


def create_project(title: str, label_config: str, tasks: list[dict[str, Any]]) -> int:
    """A new project with ``label_config``, the tasks imported; its id."""
    ls = client()
    project = _call("create a project", ls.projects.create, title=title, label_config=label_config)
    for i in range(0, len(tasks), 500):  # well under the server's 200 MB per request
        _call("import tasks", ls.projects.import_tasks, id=project.id, request=tasks[i : i + 500])
    return int(project.id)


def fetch_tasks(project: int, page_size: int = 100) -> list[dict[str, Any]]:
    """Every task of a project with its annotations, as Label Studio's JSON export has them.
    Page by page (the SDK's own pager asks for a page past the last, which the server answers
    with 404)."""
    ls = client()
    total = _task_count(ls, project)
    out: list[dict[str, Any]] = []
    for page in range(1, 1_000_000):
        pager = _call("list the tasks", ls.tasks.list, project=project, fields="all",
                      page=page, page_size=page_size)  # fmt: skip
        items = list(pager.items or [])
        out += [t.model_dump(mode="json") if hasattr(t, "model_dump") else dict(t) for t in items]
        if len(items) < page_size or len(out) >= total:
            break
    return out


def _task_count(ls: Any, project: int) -> int:
    info = _call("read the project", ls.projects.get, id=project)
    return int(getattr(info, "task_number", None) or 0) or 10**12


def record_export(out_dir: Path, entry: dict[str, Any]) -> None:
    path = out_dir / REVIEWS_DIR / "exports.json"
    path.parent.mkdir(exist_ok=True)
    entries = exports(out_dir) + [{**entry, "time": time.time()}]
    write_text(path, json.dumps(entries, indent=1))


def exports(out_dir: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads((out_dir / REVIEWS_DIR / "exports.json").read_text())
        return data if isinstance(data, list) else []
    except (OSError, ValueError):
        return []
