"""The encode stage's core, shared by its runners (``pipeline``: threads here; ``distributed``: Ray): what
a decoded file is, its points, the stale points of its old version, and its completion in the summary.

The runners only schedule (clip-retrieval's distributors share one worker the same way): a fix to how a
file's points are built, replaced or counted is made here once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from mediasearch.index.options import IndexReport, Progress
from mediasearch.index.plan import StoredFile, file_key, file_payload
from mediasearch.media.discover import FileEntry
from mediasearch.store.base import PointIn, Store, point_id

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch

    Tagger = Callable[[np.ndarray], list[list[str]]]


@dataclass
class Decoded:
    """One file, decoded and preprocessed by a worker."""

    entry: FileEntry
    old: StoredFile | None
    fingerprint: str = ""
    meta: Any = None
    timestamps: list[float | None] = field(default_factory=list)
    tensors: list[torch.Tensor] = field(default_factory=list)
    error: str | None = None
    fatal: bool = False


def file_points(item: Decoded, matrix: np.ndarray, tagger: Tagger | None) -> list[PointIn]:
    """One file's points from its vectors (one row per timestamp): the payload of ``plan.file_payload``,
    the ids of ``store.point_id``, and the tagger's tags when one is given."""
    base = file_payload(item.entry, item.fingerprint, len(item.timestamps), item.meta)
    tags = tagger(matrix) if tagger is not None else None
    key = file_key(item.entry.path)
    points = []
    for i, ts in enumerate(item.timestamps):
        payload = {**base, "timestamp": ts}
        if tags is not None:
            payload["tags"] = tags[i]
        points.append(PointIn(point_id(key, ts), matrix[i], payload))
    return points


def delete_stale(store: Store, old: StoredFile | None, new_ids: Iterable[str]) -> None:
    """After a file's new points are written: delete the points of its old version that they do not reuse."""
    if old is None:
        return
    kept = set(new_ids)
    stale = [i for i in old.ids if i not in kept]
    if stale:
        store.delete(stale)


def file_done(summary: IndexReport, progress: Progress, item: Decoded | Any, frames: int) -> None:
    """Count a file whose points are stored: added or updated, its frames, a partial read as a note."""
    if item.old is not None and item.old.complete:
        summary.updated += 1
    else:
        summary.added += 1
    summary.frames += frames if item.entry.kind == "video" else 0
    if item.error:
        summary.error(item.entry.path, f"partly read: {item.error}", failed=False)
    progress.advance(files=1, frames=frames)


def file_failed(
    summary: IndexReport, progress: Progress, entry: FileEntry, reason: str, *, remember: bool = True
) -> None:
    """Count a file that could not be encoded: one line in the errors (a file that cannot be decoded is
    also remembered, ``index.failures``; not a cluster's failure), and the bar moves on."""
    if remember:
        summary.decode_failed(entry, reason)
    else:
        summary.error(entry.path, reason)
    progress.advance(files=1)
