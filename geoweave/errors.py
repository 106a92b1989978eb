"""Three levels of error: a bad run stops before work, a bad shard is retried, a bad sample is
recorded with its reason and the build goes on."""

from __future__ import annotations


class GeoweaveError(Exception):
    """Base class of geoweave's own errors."""


class FatalError(GeoweaveError):
    """A bad run: bad recipe, unreadable input, missing credentials. Nothing is written."""


class BuildFailed(GeoweaveError):
    """The build stopped for a reason the user must fix (a full disk); exit code 1, the
    message only. Complete shards are kept: a rerun resumes."""


class ShardError(GeoweaveError):
    """A shard failed; the executor retries it, then records it as failed."""


class SampleRejected(GeoweaveError):
    """A sample is rejected; ``reason`` goes into the manifest."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Shard-level faults worth another attempt: I/O errors of the writer or of a shared file system,
# memory, an explicit ShardError (a lost worker is retried by Ray itself). Anything else raised
# out of a shard is deterministic: the same input fails the same way, so it is not retried.
RETRYABLE: tuple[type[BaseException], ...] = (ShardError, OSError, MemoryError)


DISK_FULL = "No space left on device"


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC, raised by Python or reported by a library (DuckDB, Arrow) in its message."""
    import errno

    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return DISK_FULL in str(exc) or "Disk quota exceeded" in str(exc)
