"""Domain errors: each carries a one-line message a user can act on.

Only the front ends (CLI, daemon, HTTP API) print these and choose exit codes.
"""

from __future__ import annotations


class MediaSearchError(Exception):
    """Base class for every error mediasearch reports to a user."""


class ConfigError(MediaSearchError):
    """A setting or config file is invalid."""


class ModelError(MediaSearchError):
    """A model could not be created or its weights could not be loaded."""


class WeightsUnavailableError(ModelError):
    """Pretrained weights could not be downloaded or found locally."""


class StoreError(MediaSearchError):
    """The vector store could not be opened, reached or written."""


class StoreLockedError(StoreError):
    """Another process holds the embedded store."""


class ModelMismatchError(StoreError):
    """The index was built with a different model than the one requested."""


class MediaError(MediaSearchError):
    """A media file could not be read or decoded (reported per file, never fatal)."""


class QueryError(MediaSearchError):
    """A query is malformed (bad date, empty query, unknown file)."""
