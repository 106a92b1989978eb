"""A real Label Studio server for the review tests: ``label-studio start`` on 127.0.0.1 from
its own virtualenv (``make setup`` makes ``.venv-label-studio``), offline, with a preset user
and legacy API token. Started once per test session (about 35-50 s)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import REPO, free_port

EXE = Path(os.environ.get("GEOWEAVE_LABEL_STUDIO", REPO / ".venv-label-studio/bin/label-studio"))
TOKEN = "4f1c2b9e8a7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b"  # a test server's own, preset token
USER = "reviewer@example.com"


@dataclass
class Server:
    url: str
    token: str
    proc: subprocess.Popen[bytes]
    log: Path


def _env(data: Path) -> dict[str, str]:
    return {
        **os.environ,
        "LABEL_STUDIO_USERNAME": USER,
        "LABEL_STUDIO_PASSWORD": "review-pass-123",
        "LABEL_STUDIO_USER_TOKEN": TOKEN,
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "SENTRY_DSN": "",
        "COLLECT_ANALYTICS": "false",
        "LATEST_VERSION_CHECK": "false",
        "LABEL_STUDIO_BASE_DATA_DIR": str(data),
    }


def start(data: Path, timeout: float = 240) -> Server:
    assert EXE.exists(), f"{EXE} is missing: `make setup` installs Label Studio there"
    port = free_port()
    data.mkdir(parents=True, exist_ok=True)
    log = data / "label-studio.log"
    cmd = [str(EXE), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port",
           str(port), "--data-dir", str(data / "ls")]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=_env(data),
                                start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"label-studio exited: {log.read_text(errors='replace')[-2000:]}")
        request = urllib.request.Request(
            f"{url}/api/projects", headers={"Authorization": f"Token {TOKEN}"}
        )
        with contextlib.suppress(OSError), urllib.request.urlopen(request, timeout=5) as reply:
            if reply.status == 200:
                return Server(url, TOKEN, proc, log)
        time.sleep(1)
    stop(proc)
    raise RuntimeError(
        f"label-studio not up in {timeout} s: {log.read_text(errors='replace')[-2000:]}"
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
