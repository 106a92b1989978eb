"""Three levels of error: a bad run stops before work, a bad shard is retried, a bad sample is
recorded with its reason and the build goes on."""

from __future__ import annotations


class GeoweaveError(Exception):
    """Base class of geoweave's own errors."""


class FatalError(GeoweaveError):
    """A bad run: bad recipe, unreadable input, missing credentials. Nothing is written."""


class ShardError(GeoweaveError):
    """A shard failed; the executor retries it, then records it as failed."""


class SampleRejected(GeoweaveError):
    """A sample is rejected; ``reason`` goes into the manifest."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
