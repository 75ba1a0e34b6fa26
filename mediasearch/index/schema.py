"""The collection's schema version and the upgrades from every earlier one (rclip's ``ensure_version``).

A collection records ``"schema"`` in its meta; one written before versions existed is version 1. Opening
an older collection runs each step from its version up to ``SCHEMA_VERSION`` in turn, each step
idempotent and the version written after it, so an upgrade stopped half-way is finished at the next
open. A collection from a newer mediasearch is refused with a message that says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from mediasearch.errors import StoreError
from mediasearch.index.versions import CLIP, CLIP_VERSION, ENRICHERS_KEY, SCHEMA_KEY, SCHEMA_VERSION, record_of
from mediasearch.store.base import Store

UPGRADE_BATCH = 4096


def schema_of(store: Store) -> int:
    """The collection's schema version (1 for a collection that records none)."""
    return int((store.get_meta() or {}).get(SCHEMA_KEY, 1))


def new_meta() -> dict[str, int]:
    """What a new collection's meta records about its schema."""
    return {SCHEMA_KEY: SCHEMA_VERSION}


def ensure_schema(store: Store) -> list[str]:
    """Upgrade the collection to ``SCHEMA_VERSION``; what each step did (empty when it was current)."""
    meta = store.get_meta()
    if meta is None:
        return []  # a collection being created: its creator records the schema
    version = int(meta.get(SCHEMA_KEY, 1))
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"the index {store.collection} was written by a newer mediasearch (schema {version}, this one "
            f"knows {SCHEMA_VERSION}): upgrade mediasearch to use it"
        )
    done = []
    while version < SCHEMA_VERSION:
        done.append(UPGRADES[version](store))
        version += 1
        store.set_meta({**(store.get_meta() or {}), SCHEMA_KEY: version, "upgraded": time.time()})
    if done:
        store.flush()
    return done


def _record_enrichers(store: Store) -> str:
    """1 -> 2: every point gets an enrichers record: its vector is clip's; its metadata is left for the
    metadata enricher to read again (fields were added over time: GPS came after the first stores)."""
    scanned = store.scroll(fields=(ENRICHERS_KEY,), batch=UPGRADE_BATCH)
    missing = [rec.id for rec in scanned if not record_of(rec.payload)]
    for start in range(0, len(missing), UPGRADE_BATCH):
        store.set_payload(missing[start : start + UPGRADE_BATCH], {ENRICHERS_KEY: {CLIP: CLIP_VERSION}})
    return f"schema 1 -> 2: {len(missing)} points recorded as encoded, their metadata to be read again"


UPGRADES: dict[int, Callable[[Store], str]] = {1: _record_enrichers}  # from version k to k + 1
