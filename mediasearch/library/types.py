"""What the use cases return: dataclasses whose fields are exactly the keys of the matching ``--json`` output.

``IndexReport`` is the indexer's own report (``index/options.py``) and ``Hit`` the search's own result
(``search/query.py``), re-exported here; the rest are defined here. ``dataclasses.asdict`` of any of
them is what the CLI prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mediasearch.index.options import IndexReport
from mediasearch.search.query import Hit

__all__ = [
    "Classification",
    "DuplicateGroup",
    "Embedding",
    "FileError",
    "ForgetReport",
    "Hit",
    "IndexReport",
    "LabelProb",
    "Explanation",
    "PlaceCount",
    "PlaceRef",
    "Status",
    "TagReport",
]


@dataclass
class FileError:
    """A file a command could not use, and why (one line)."""

    path: str
    error: str


@dataclass
class Status:
    """``status --json``: what is indexed, by which model, where, the last run and its failures."""

    home: str
    files: int = 0
    images: int = 0
    videos: int = 0
    frames: int = 0
    model: dict[str, Any] | None = None
    store: str | None = None
    collection: str | None = None
    last_run: dict[str, Any] | None = None
    failures: list[dict[str, Any]] = field(default_factory=list)  # {"path", "error", "since": unix time}
    tagging: bool = False
    skipped: int = 0  # files the last run passed over for their extension
    skipped_extensions: dict[str, int] = field(default_factory=dict)  # those files, by extension
    enrichers: dict[str, dict[str, int]] = field(default_factory=dict)  # name -> {"done", "pending"} points
    daemon: dict[str, Any] | None = None  # set when a daemon owns the home


@dataclass
class TagReport:
    """``tag --json``: files looked at, files that got at least one tag, and files per tag."""

    files: int
    tagged: int
    tags: dict[str, int]


@dataclass
class LabelProb:
    label: str
    prob: float


@dataclass
class Classification:
    """One row of ``classify --json``: a file and its labels, most probable first."""

    path: str
    labels: list[LabelProb]


@dataclass
class Embedding:
    """One row of ``embed --json``: a file's or a text's L2-normalised embedding."""

    embedding: list[float]
    path: str | None = None
    text: str | None = None

    def to_json(self) -> dict[str, Any]:
        key = {"path": self.path} if self.path is not None else {"text": self.text}
        return {**key, "embedding": self.embedding}


@dataclass
class ForgetReport:
    """``POST /forget``'s answer: the path forgotten (absolute) and how many files were dropped."""

    path: str
    files: int


@dataclass
class DuplicateGroup:
    """One row of ``duplicates --json``: files that are copies of each other (shown paths, sorted), the
    similarity of the weakest link between them (1.0 for byte copies), and ``"exact"`` (all byte-identical)
    or ``"near"``."""

    paths: list[str]
    similarity: float
    kind: str


@dataclass
class PlaceCount:
    """``places --json``: a city where indexed files were taken, its region and country, how many files."""

    city: str
    region: str
    country: str
    files: int


@dataclass
class PlaceRef:
    """A place a query names: its name and the circle that stands for it (``km`` from its centre)."""

    name: str
    lat: float
    lon: float
    km: float


@dataclass
class Explanation:
    """``query --explain``: how the one-line query is read, with the explicit options winning. ``text`` is
    what CLIP searches; ``after``/``before`` are local ISO times; every field the query does not give is
    empty."""

    text: str | None
    after: str | None = None
    before: str | None = None
    place: PlaceRef | None = None
    people: list[str] = field(default_factory=list)
    kind: str | None = None
    ocr: list[str] = field(default_factory=list)
    sort: str | None = None
