"""Copy a collection from one store to another (Edge ⇄ a Qdrant server): scroll, then upsert in pages.

Resumable: a page's points that the target already holds with the same payload are skipped, so a run
that was killed picks up where it stopped (ids are deterministic, so nothing is duplicated). Into a
server, pages are written without waiting (``wait=False``) and one barrier at the end waits until the
collection is green and holds them all; an empty server collection is filled in bulk-load mode (no HNSW
graph until the copy is over).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from mediasearch.errors import ModelMismatchError
from mediasearch.store.base import PointIn, Record, Store
from mediasearch.store.server import QdrantStore


@dataclass
class Copied:
    """What a migration did: points written, points the target already had, seconds."""

    copied: int = 0
    skipped: int = 0
    seconds: float = 0.0


def _pages(records: Iterator[Record], size: int) -> Iterator[list[Record]]:
    page: list[Record] = []
    for rec in records:
        page.append(rec)
        if len(page) == size:
            yield page
            page = []
    if page:
        yield page


def copy_points(
    source: Store, target: Store, *, batch: int = 256, on_page: Callable[[int], None] | None = None
) -> Copied:
    """Make ``target`` hold every point of ``source`` (ids, vectors, payloads) and its metadata."""
    if source.dim != target.dim:
        raise ModelMismatchError(
            f"cannot copy {source.dim}-d vectors of {source.location} into the {target.dim}-d {target.location}"
        )
    started, done = time.perf_counter(), Copied()
    server = target if isinstance(target, QdrantStore) else None
    _copy_meta(source, target)
    bulk = server is not None and (server.count() == 0 or server.in_bulk_load)
    if bulk:
        assert server is not None
        server.set_bulk_load(True)
    written: list[str] = []
    for page in _pages(source.scroll(with_vectors=True, batch=batch), batch):
        have = {r.id: r.payload for r in target.retrieve([r.id for r in page])}
        todo = [PointIn(r.id, r.vector, r.payload) for r in page if r.vector is not None]
        todo = [p for p in todo if have.get(p.id) != p.payload]
        if server is not None:
            server.upsert(todo, wait=False)
            written += [p.id for p in todo]
        else:
            target.upsert(todo)
        done.copied += len(todo)
        done.skipped += len(page) - len(todo)
        if on_page is not None:
            on_page(len(page))
    if server is not None:
        server.wait_applied(written)
        if bulk:
            server.set_bulk_load(False)
    target.flush()
    done.seconds = time.perf_counter() - started
    return done


def _copy_meta(source: Store, target: Store) -> None:
    """The source's metadata (the model that built it, tagging), keeping the target's bulk-load state."""
    meta = {k: v for k, v in (source.get_meta() or {}).items() if k != "bulk_load"}
    mode = (target.get_meta() or {}).get("bulk_load")
    if mode is not None:
        meta["bulk_load"] = mode
    target.set_meta(meta)
