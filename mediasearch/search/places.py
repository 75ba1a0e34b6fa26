"""The places of the library: which cities, regions and countries its geotagged files were taken in."""

from __future__ import annotations

from collections import Counter

from mediasearch.store.base import Store


def place_counts(store: Store) -> list[tuple[str, str, str, int]]:
    """(city, region, country, files) of the indexed files, most files first (a video counts once)."""
    where: dict[str, tuple[str, str, str]] = {}
    for rec in store.scroll(fields=("path", "place")):
        place = rec.payload.get("place")
        if isinstance(place, dict) and place.get("city"):
            where[rec.payload["path"]] = (place["city"], place.get("region", ""), place.get("country", ""))
    counts = Counter(where.values())
    rows = [(city, region, country, n) for (city, region, country), n in counts.items()]
    return sorted(rows, key=lambda r: (-r[3], r[2], r[0]))


def place_names(store: Store) -> list[str]:
    """The folded names (cities, districts, regions, countries) that ``--place`` and the parser can match."""
    return sorted(store.facet("places", limit=100_000))
