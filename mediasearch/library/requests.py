"""What front ends build to ask for a use case (a query, index options) and the few names they need.

Re-exported here so that the CLI and the daemon depend on the use-case layer alone.
"""

from mediasearch.clip.zeroshot import parse_labels
from mediasearch.index.options import IndexOptions
from mediasearch.index.options import IndexSummary as IndexReport
from mediasearch.index.plan import StoredFile
from mediasearch.search.query import Query, Term, parse_date, parse_near, parse_weighted
from mediasearch.search.vocabulary import Vocabulary, load_vocabulary
from mediasearch.store.base import EXACT_SEARCH_MAX_POINTS, Store

__all__ = [
    "EXACT_SEARCH_MAX_POINTS",
    "IndexOptions",
    "IndexReport",
    "Query",
    "Store",
    "StoredFile",
    "Term",
    "Vocabulary",
    "parse_date",
    "load_vocabulary",
    "parse_labels",
    "parse_near",
    "parse_weighted",
]
