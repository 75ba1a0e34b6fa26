"""Requests: what a front end asks for, turned into what the stages run.

:func:`query_of` turns the values of a query (named and checked as in ``queryspec``) into the search
``Query`` every front end sends. The stage names a front end must hold (``Query``, ``Term``,
``IndexOptions``, ...) are re-exported from here, so that the CLI and the daemon depend on the
use-case layer alone (import-linter's "front ends" contract).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from mediasearch import queryspec, textnorm
from mediasearch.clip.zeroshot import parse_labels
from mediasearch.geo.names import fold
from mediasearch.index.options import IndexOptions, IndexReport
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
    "query_of",
]


def query_of(values: Mapping[str, Any], *, similar: bool = False, terms: tuple[Term, ...] = ()) -> Query:
    """The search Query for a query's values (the spec's names; missing ones take their defaults).

    Texts may be weighted ('2:dog'); image paths are made absolute; ``ocr`` words are normalised as
    the OCR enricher stores them; a ``place`` is folded as the places enricher stores names.
    ``similar``: only the fields `similar` takes (the filters, the limit and the order). ``terms``: more
    weighted terms (the HTTP API's), last."""
    fields = queryspec.SIMILAR_FIELDS if similar else queryspec.QUERY_FIELDS
    queryspec.validate(values, fields)
    v = {**queryspec.defaults(fields), **{k: x for k, x in values.items() if x is not None}}
    made = () if similar else _terms(v)
    literal = bool(v.get("literal")) or not v.get("text")
    return Query(
        terms=made + tuple(terms),
        raw=bool(v.get("raw")),
        limit=int(v["limit"]),
        kind=v["kind"],
        path_prefix=os.path.abspath(os.fspath(v["folder"])) if v["folder"] else None,
        tags=tuple(v["tags"]),
        after=_when(v["after"]),
        before=_when(v["before"]),
        min_score=v.get("min_score"),
        sort=v["sort"],
        near=_near(v["near"]),
        camera=v["camera"] or None,
        ocr=tuple(w for text in v["ocr"] for w in textnorm.words(text)),
        people=tuple(name.strip() for name in v["person"]),
        place=fold(v["place"]) if v["place"] else None,
        parse_text=not similar and not literal,
    )


def _terms(v: Mapping[str, Any]) -> tuple[Term, ...]:
    """The weighted terms: the text first (the one a one-line query is read from), then the rest."""
    terms: list[Term] = []
    if v["text"]:
        w, t = parse_weighted(v["text"])
        terms.append(Term("text", t, v["weight"] if v["weight"] is not None else w))
    terms += [Term("text", t, w) for w, t in map(parse_weighted, v["also"])]
    terms += [Term("image", os.path.abspath(os.fspath(p)), 1.0) for p in v["image"]]
    terms += [Term("text", t, -w) for w, t in map(parse_weighted, v["negatives"])]
    terms += [Term("image", os.path.abspath(os.fspath(p)), -1.0) for p in v["not_image"]]
    return tuple(terms)


def _when(value: str | float | None) -> float | None:
    return parse_date(value) if isinstance(value, str) else value


def _near(value: Any) -> tuple[float, float, float] | None:
    if value is None or isinstance(value, tuple):
        return value
    if isinstance(value, str):
        return parse_near(value)
    if isinstance(value, Mapping):
        return parse_near(f"{value['lat']},{value['lon']},{value['km']}")
    return parse_near(",".join(str(x) for x in value))
