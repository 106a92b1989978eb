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


def test_a_file_is_hashed_once_while_its_size_mtime_and_inode_hold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checksum cache: a second build takes the checksum from it; a changed file (new
    mtime), a replaced one (new inode) and ``verify`` hash again; a corrupt cache file is
    only a cache."""
    import geoweave.sources.checksums as checksums
    from geoweave.sources.checksum_cache import ChecksumCache

    hashed: list[str] = []
    original = checksums.file_sha256

    def counting(path: Path, chunk: int = 1 << 20) -> str:
        hashed.append(path.name)
        return original(path, chunk)

    monkeypatch.setattr(checksums, "file_sha256", counting)
    img, cache_file = tmp_path / "img.tif", tmp_path / "cache" / "checksums.json"
    img.write_bytes(b"pixels")

    def build(verify: bool = False) -> str:
        inputs = InputChecksums(ChecksumCache(cache_file), verify=verify)
        inputs.hash(img)
        return inputs.result()[str(img)]

    assert build() == hashlib.sha256(b"pixels").hexdigest() and hashed == ["img.tif"]
    assert build() == hashlib.sha256(b"pixels").hexdigest() and hashed == ["img.tif"]
    st = img.stat()
    img.write_bytes(b"PIXELS")  # same size; the mtime moves
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert build() == hashlib.sha256(b"PIXELS").hexdigest() and len(hashed) == 2
    replaced = tmp_path / "new.tif"
    replaced.write_bytes(b"other!")
    st = img.stat()
    os.utime(replaced, ns=(st.st_atime_ns, st.st_mtime_ns))  # size and mtime as before
    os.replace(replaced, img)  # a new inode
    assert build() == hashlib.sha256(b"other!").hexdigest() and len(hashed) == 3
    assert build(verify=True) == hashlib.sha256(b"other!").hexdigest() and len(hashed) == 4
    assert build() == hashlib.sha256(b"other!").hexdigest() and len(hashed) == 4
    cache_file.write_text("{not json")
    assert build() == hashlib.sha256(b"other!").hexdigest() and len(hashed) == 5
    assert sorted(p.name for p in cache_file.parent.iterdir()) == ["checksums.json"]
