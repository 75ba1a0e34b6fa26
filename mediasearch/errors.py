"""Domain errors: each carries a one-line message a user can act on.

Only the front ends (CLI, daemon, HTTP API) print these and choose exit codes.
"""

from __future__ import annotations

from typing import Any


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


class StoreFullError(StoreError):
    """The disk that holds the embedded store is (nearly) full; nothing was written."""


class ModelMismatchError(StoreError):
    """The index was built with a different model than the one requested."""


class MediaError(MediaSearchError):
    """A media file could not be read or decoded (reported per file, never fatal)."""


class QueryError(MediaSearchError):
    """A query is malformed (bad date, empty query, unknown file)."""


class MissingFileError(QueryError):
    """A file a request names (an image to search by, a vocabulary, a file to read) does not exist."""


class UnknownNameError(QueryError):
    """A query names something the home does not hold (a person no face was named after)."""


class DataError(MediaSearchError):
    """A fine-tuning or evaluation data set is malformed, or has missing or unreadable files."""


class FinetuneRefused(MediaSearchError):
    """Fine-tuning finished but its model is no better than zero-shot; nothing was written."""

    def __init__(self, message: str, report: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.report = report  # the figures behind the verdict, for scripts
