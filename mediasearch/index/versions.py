"""The versions of what the index writes: the store's schema and the signals the CLIP pass itself records.

Each point's payload holds ``"enrichers": {name: version}``, the enrichers (docs/architecture.md,
"Signals and enrichers") whose data it carries. The CLIP pass writes the vector and the file's metadata,
so a point it writes is recorded as done by ``clip`` and ``metadata`` at the versions below; the other
enrichers follow in the enrichment pass (``index.enrich``).
"""

from __future__ import annotations

from typing import Any

ENRICHERS_KEY = "enrichers"  # payload: {enricher name: version that produced the point's data}
CLIP = "clip"
CLIP_VERSION = 1  # the vector: bumping it means a new collection (a new model key), not an enrichment
METADATA = "metadata"
METADATA_VERSION = 1  # date, camera, GPS (geo), size, duration as media.decode reads them
SCHEMA_KEY = "schema"  # collection meta: the layout version of the collection's payloads
SCHEMA_VERSION = 2  # 1: no enrichers record (before this round); 2: the record on every point


def record_of(payload: dict[str, Any]) -> dict[str, int]:
    """The enrichers record of a stored point (empty for one written before records existed)."""
    record = payload.get(ENRICHERS_KEY)
    return {str(k): int(v) for k, v in record.items()} if isinstance(record, dict) else {}


def encoded_record() -> dict[str, int]:
    """The record of a point the CLIP pass writes: its vector and the metadata read while decoding."""
    return {CLIP: CLIP_VERSION, METADATA: METADATA_VERSION}
