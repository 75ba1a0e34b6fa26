"""The places enricher: the city, region and country where a geotagged file was taken.

It reads the ``geo`` point the metadata stored (no pixel, no model) and reverse-geocodes it with the
offline gazetteer (``mediasearch.geo``: GeoNames towns in a KD-tree, well under a millisecond a file).
It writes ``place`` ({"city", "region", "country"}, shown in results and counted by ``places``) and
``places`` (their folded names, keyword-indexed: what ``--place`` and a parsed "in Japan" match). A
file without GPS, or taken far from any town, gets neither.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from mediasearch.index.enrich import FileInput, drop_fields
from mediasearch.settings import Settings
from mediasearch.store.base import Store

PLACES_VERSION = 1  # bump when the gazetteer or the choice of a point's city changes


class PlacesEnricher:
    name = "places"
    version = PLACES_VERSION
    reads: Literal["pixels", "payload"] = "payload"
    max_side = 0
    fields: tuple[str, ...] = ("place", "places")

    def run(self, item: FileInput, store: Store) -> dict[str, dict[str, Any]]:
        from mediasearch.geo.gazetteer import gazetteer

        gaz = gazetteer()
        gaz.lookup("")  # the first run builds the name table queries read, here rather than in a query
        fields: dict[str, Any] = {"place": None, "places": []}
        geo = item.payload.get("geo")
        if isinstance(geo, dict) and geo.get("lat") is not None and geo.get("lon") is not None:
            location = gaz.reverse(float(geo["lat"]), float(geo["lon"]))
            if location is not None:
                fields = location.payload()
        return {frame.point_id: fields for frame in item.frames}

    def drop(self, store: Store) -> None:
        drop_fields(store, self)

    def forget(self, point_ids: Sequence[str], store: Store) -> None:
        pass  # all in the points' payloads: they go with them


def make(settings: Settings) -> PlacesEnricher:
    return PlacesEnricher()
