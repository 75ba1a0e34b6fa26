"""The use-case layer: :class:`Library` and the result types every front end returns.

The CLI, the daemon, the HTTP API and Python users call this layer and nothing below it for their use
cases (import-linter checks it: see pyproject.toml).
"""

from mediasearch.library.api import Library
from mediasearch.library.types import (
    Classification,
    Embedding,
    FileError,
    Hit,
    IndexReport,
    LabelProb,
    Status,
    TagReport,
)

__all__ = [
    "Classification",
    "Embedding",
    "FileError",
    "Hit",
    "IndexReport",
    "LabelProb",
    "Library",
    "Status",
    "TagReport",
]
