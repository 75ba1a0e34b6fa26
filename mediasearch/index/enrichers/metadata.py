"""The metadata enricher: a file's capture date, camera and place (GPS), read again from the file.

The CLIP pass reads them while decoding (and records ``metadata`` at ``METADATA_VERSION``); this
enricher brings points written before a field was read (or by an older reader) up to date without
decoding a pixel or touching a vector: a file indexed before GPS was read gets its ``geo`` at the next
plain ``index``. Bump ``METADATA_VERSION`` (``index/versions.py``) when ``media.decode`` reads more.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from mediasearch.index.enrich import FileInput, drop_fields
from mediasearch.index.versions import METADATA, METADATA_VERSION
from mediasearch.settings import Settings
from mediasearch.store.base import Store


class MetadataEnricher:
    name = METADATA
    version = METADATA_VERSION
    reads: Literal["pixels", "payload"] = "payload"
    max_side = 0
    fields: tuple[str, ...] = ("date", "camera", "geo")

    def run(self, item: FileInput, store: Store) -> dict[str, dict[str, Any]]:
        from mediasearch.media.decode import read_metadata

        meta = read_metadata(item.path, item.kind)
        mtime = item.payload.get("mtime")
        fields: dict[str, Any] = {"camera": meta.camera, "date": meta.date if meta.date is not None else mtime}
        if meta.lat is not None and meta.lon is not None:
            fields["geo"] = {"lat": meta.lat, "lon": meta.lon}
        return {frame.point_id: fields for frame in item.frames}

    def drop(self, store: Store) -> None:
        drop_fields(store, self)  # never turned off by a setting; here for the protocol

    def forget(self, point_ids: Sequence[str], store: Store) -> None:
        pass  # all in the points' payloads: they go with them


def make(settings: Settings) -> MetadataEnricher:
    return MetadataEnricher()
