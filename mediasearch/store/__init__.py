"""Where vectors live: the Store protocol, the embedded Qdrant Edge shard and a Qdrant server/cluster.

``base`` holds the contract (records, filters, ids, the protocol); ``edge`` and ``server`` the two
backends; ``collections`` opens the right one and knows which collection queries use.
"""

from mediasearch.store.base import (
    EXACT_SEARCH_MAX_POINTS,
    Filter,
    PointIn,
    Record,
    Store,
    collection_name,
    normalize_dir,
    point_id,
)
from mediasearch.store.collections import active_collection, list_collections, open_store, set_active_collection

__all__ = [
    "EXACT_SEARCH_MAX_POINTS",
    "Filter",
    "PointIn",
    "Record",
    "Store",
    "active_collection",
    "collection_name",
    "list_collections",
    "normalize_dir",
    "open_store",
    "point_id",
    "set_active_collection",
]
