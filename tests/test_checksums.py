"""Input checksums for the run record: right values, on a thread that yields the CPU."""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from pathlib import Path

import pytest

from geoweave.sources.checksums import InputChecksums


def test_checksums_are_the_files_sha256_and_known_ones_are_kept(tmp_path: Path) -> None:
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    a.write_bytes(os.urandom(3 << 20))  # more than one read chunk
    b.write_bytes(b"")
    inputs = InputChecksums()
    inputs.hash(a)
    inputs.hash(b)
    inputs.set("osm.pbf", "f" * 64)
    inputs.start()
    assert inputs.result() == {
        str(a): hashlib.sha256(a.read_bytes()).hexdigest(),
        str(b): hashlib.sha256(b"").hexdigest(),
        "osm.pbf": "f" * 64,
    }


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice is Linux's")
def test_the_hashing_thread_runs_at_nice_19_and_the_process_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checksums are needed only at the end of a build: Ray's start, the early workers
    and the shards come first."""
    import geoweave.sources.checksums as checksums

    seen: list[int] = []
    original = checksums.file_sha256

    def spy(path: Path, chunk: int = 1 << 20) -> str:
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return original(path, chunk)

    monkeypatch.setattr(checksums, "file_sha256", spy)
    (tmp_path / "x").write_bytes(b"x")
    inputs = InputChecksums()
    inputs.hash(tmp_path / "x")
    assert inputs.result() == {str(tmp_path / "x"): hashlib.sha256(b"x").hexdigest()}
    assert seen == [19]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == os.nice(0)
