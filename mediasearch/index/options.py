"""What an index run is asked to do (options) and what it reports (the summary, the progress protocol)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Protocol

from mediasearch.media.discover import FileEntry, display_path


@dataclass(frozen=True)
class IndexOptions:
    """How to sample and batch (docs/architecture.md, "The index stage")."""

    frame_interval: float = 2.0
    max_frames: int = 600
    batch_size: int = 0  # 0: the model's own, chosen for its device
    workers: int = 0
    include_hidden: bool = False
    decode_timeout: float = 30.0  # per video, plus decode_pool.PER_FRAME_S per sampled frame
    exact_times: bool = False  # sample videos at exactly the planned times, not at keyframes near them
    retry_failed: bool = False  # decode again the files that failed before, though they are unchanged


@dataclass
class IndexReport:
    """What an index run did; ``to_json`` is the CLI contract."""

    scanned: int = 0
    skipped: int = 0  # files passed over for their extension (not a format mediasearch reads)
    added: int = 0
    updated: int = 0
    moved: int = 0
    removed: int = 0
    unchanged: int = 0
    failed: int = 0
    frames: int = 0
    seconds: float = 0.0
    errors: list[dict[str, str]] = field(default_factory=list)
    enriched: dict[str, int] = field(default_factory=dict)  # points each enricher wrote (index.enrich)
    skipped_extensions: dict[str, int] = field(default_factory=dict)  # the `skipped` files by extension

    def __post_init__(self) -> None:
        self.broken: dict[str, tuple[FileEntry, str]] = {}  # decode failures, for `index.failures` (not a field)

    def error(self, path: str, reason: str, *, failed: bool = True) -> None:
        self.errors.append({"path": display_path(path), "error": reason})
        self.failed += int(failed)

    def decode_failed(self, entry: FileEntry, reason: str) -> None:
        """A file that could not be decoded: listed, and remembered (``index.failures``) by the runner."""
        self.error(entry.path, reason)
        self.broken[entry.path] = (entry, reason)

    def to_json(self) -> dict[str, Any]:
        return {
            "scanned": self.scanned,
            "skipped": self.skipped,
            "added": self.added,
            "updated": self.updated,
            "moved": self.moved,
            "removed": self.removed,
            "unchanged": self.unchanged,
            "failed": self.failed,
            "frames": self.frames,
            "seconds": round(self.seconds, 3),
            "errors": self.errors,
            "skipped_extensions": dict(sorted(self.skipped_extensions.items(), key=lambda kv: (-kv[1], kv[0]))),
            "enriched": self.enriched,
        }

    def skip(self, path: str) -> None:
        """A file passed over for its extension (not a format mediasearch reads): counted by extension."""
        self.skipped += 1
        ext = os.path.splitext(path)[1][1:].lower()[:16] or "(none)"
        self.skipped_extensions[ext] = self.skipped_extensions.get(ext, 0) + 1


class Progress(Protocol):
    """Where the indexer reports progress; the CLI passes a rich bar, others nothing."""

    def start(self, files: int) -> None: ...

    def advance(self, files: int = 0, frames: int = 0) -> None: ...

    def finish(self) -> None: ...


class NoProgress:
    def start(self, files: int) -> None:
        pass

    def advance(self, files: int = 0, frames: int = 0) -> None:
        pass

    def finish(self) -> None:
        pass
