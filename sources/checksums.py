"""Input checksums: they key the label-index cache and go into the manifest's ``runs`` table."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import Future
from pathlib import Path

from geoweave.sources.checksum_cache import ChecksumCache


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """The hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


SAMPLE_BLOCKS = 64  # blocks of SAMPLE_BYTES spread evenly over the file
SAMPLE_BYTES = 1 << 16


def file_fingerprint(path: Path) -> str:
    """A quick identity of a large file: ``size-mtime_ns-sha256`` of 64 blocks of 64 KiB at
    even offsets (the first and the last included): 4 MiB read whatever the size, so a
    planet-sized PBF costs milliseconds, not minutes. A change in place that keeps the size,
    the mtime and every sampled block is not seen: ``--verify-inputs`` hashes the whole file."""
    st = path.stat()
    digest = hashlib.sha256()
    with path.open("rb") as f:
        last = max(st.st_size - SAMPLE_BYTES, 0)
        for i in range(SAMPLE_BLOCKS):
            f.seek(last * i // (SAMPLE_BLOCKS - 1))
            digest.update(f.read(SAMPLE_BYTES))
    return f"{st.st_size}-{st.st_mtime_ns}-{digest.hexdigest()[:32]}"


class InputChecksums:
    """The sha256 of every input file of a build, hashed on a background thread.

    Hashing a 1.7 GB mosaic takes about a second; it runs beside the shard work instead of
    before it (``hashlib`` releases the GIL). ``hash`` only notes a file: the thread starts at
    ``start()``, which the executor calls after it has forked its early worker (a fork must not
    copy a running thread). ``result()`` waits for all of them. With a ``ChecksumCache``, a file
    unchanged since an earlier build (size, mtime, inode) is not hashed again.
    """

    def __init__(self, cache: ChecksumCache | None = None, verify: bool = False) -> None:
        """``cache``: checksums of earlier builds, taken while a file is unchanged (``verify``:
        hash every file anyway); this build's are added to it."""
        self._paths: dict[str, Path] = {}
        self._pending: dict[str, Future[str]] = {}
        self._known: dict[str, str] = {}
        self._stats: dict[str, os.stat_result] = {}
        self._cache, self._verify = cache, verify

    def hash(self, path: Path) -> None:
        """Note ``path`` to be hashed (or take its checksum from the cache)."""
        key = str(path)
        if key in self:
            return
        try:
            st = path.stat()
        except OSError:  # hashing it will say what is wrong
            st = None
        cached = self._cache.get(path, st) if self._cache and st and not self._verify else None
        if cached:
            self._known[key] = cached
            return
        self._paths[key] = path
        if st is not None:
            self._stats[key] = st

    def start(self) -> None:
        """Start hashing on a background thread (once)."""
        if self._pending or not self._paths:
            return
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="sha256", initializer=_lowest_priority
        )
        self._pending = {k: pool.submit(file_sha256, p) for k, p in self._paths.items()}
        pool.shutdown(wait=False)

    def set(self, key: str, checksum: str) -> None:
        """A checksum known already (the OSM index is keyed by its file's)."""
        self._known[key] = checksum

    def __contains__(self, key: object) -> bool:
        return key in self._known or key in self._paths

    def result(self) -> dict[str, str]:
        """Every checksum, by path; waits for the ones still being computed, and keeps them in
        the cache."""
        self.start()
        out = dict(self._known)
        out.update({k: f.result() for k, f in self._pending.items()})
        if self._cache is not None:
            for key, st in self._stats.items():
                self._cache.put(self._paths[key], st, out[key])
            self._cache.save()
        return out


def _lowest_priority() -> None:
    """Run the calling thread at nice 19 (Linux schedules threads one by one): the checksums
    are for the run record, needed only at the end, so they take the CPU that Ray's start, the
    early workers and the shards leave idle."""
    import contextlib
    import threading

    # not Linux: the thread runs at the process's priority
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
