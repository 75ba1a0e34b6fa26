"""Domain errors: each carries a one-line message a user can act on.

Only the front ends (CLI, daemon, HTTP API) print these and choose exit codes.
"""

from __future__ import annotations

import re
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


class NotIndexedError(QueryError):
    """A path a request names is not in the index (so nothing about it is read or told)."""


class MissingFileError(QueryError):
    """A file a request names (an image to search by, a vocabulary, a file to read) does not exist."""


class UnknownPersonError(QueryError):
    """A request names a person, or a face, that the library does not have (HTTP 404)."""


class DataError(MediaSearchError):
    """A fine-tuning or evaluation data set is malformed, or has missing or unreadable files."""


class FinetuneRefused(MediaSearchError):
    """Fine-tuning finished but its model is no better than zero-shot; nothing was written."""

    def __init__(self, message: str, report: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.report = report  # the figures behind the verdict, for scripts


# scheme://user:password@host → scheme://***@host; "api-key: K", "api_key=K", "token=T" → the name and ***.
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@]*@")
_SECRETS = re.compile(
    r"(?i)(?P<name>\b(?:api[-_ ]?key|x-api-key|token|password|passwd|secret|authorization)\b[\"']?\s*[:=]\s*"
    r"[\"']?(?:bearer\s+)?)(?P<value>[^\s\"'&,;)}]+)"
)


def redact(text: str) -> str:
    """``text`` without credentials: the user-info of URLs and the values of API keys, tokens and
    passwords (every message and log line a user or another process may see goes through it)."""
    text = _USERINFO.sub(r"\g<scheme>***@", text)
    return _SECRETS.sub(r"\g<name>***", text)


def redact_url(url: str) -> str:
    """A URL as it may be shown: without its user-info."""
    return _USERINFO.sub(r"\g<scheme>***@", url)
