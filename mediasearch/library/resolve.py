"""From the query a front end sent to the query the store runs: the one-line parse and people's names.

Runs where the home is (this process, or the daemon), since both need what the home holds: the names
of its people. ``query --explain`` shows :func:`explain`'s answer instead of searching.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from mediasearch.errors import UnknownNameError
from mediasearch.search.query import ParsedQuery, Query, Term, parse_date

# ``lib`` below is the LocalLibrary that asks (not imported: it imports this module).
LocalLibrary = Any


def known_people(lib: LocalLibrary) -> list[str]:
    """The names of the home's people (the faces signal names them; none until it does)."""
    return []


def person_ids(lib: LocalLibrary, names: Sequence[str]) -> tuple[str, ...]:
    """The ids of the people ``names`` name, in the home's people; an unknown name is an UnknownNameError."""
    for name in names:
        raise UnknownNameError(f"no person named {name!r}")
    return ()


def parse_one_line(text: str, *, now: dt.datetime, people: Sequence[str]) -> ParsedQuery:
    """What the one-line query ``text`` says (``search.parse``), or the text alone where no parser is."""
    try:
        from mediasearch.search.parse import parse_query  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return ParsedQuery(text=text)
    parsed: ParsedQuery = parse_query(text, now=now, people=people)
    return parsed


def explain(lib: LocalLibrary, query: Query) -> ParsedQuery:
    """The query as the search will read it: the parse of its text, with the explicit fields winning."""
    text = query.terms[0].value if query.terms and query.terms[0].kind == "text" else None
    parsed = ParsedQuery(text=text)
    if query.parse_text and text:
        parsed = parse_one_line(text, now=dt.datetime.now(), people=known_people(lib))
    explicit: dict[str, Any] = {
        "after": _date_text(query.after),
        "before": _date_text(query.before),
        "people": query.people,
        "kind": query.kind,
        "ocr": query.ocr,
        "sort": query.sort if query.sort != "score" else None,
    }
    chosen = {k: v for k, v in explicit.items() if v}
    return replace(parsed, **chosen)


def resolve(lib: LocalLibrary, query: Query) -> Query:
    """``query`` with its text parsed (unless literal) and its people's names turned into person ids."""
    if query.parse_text and query.terms:
        query = _merge(query, explain(lib, query))
    if query.people:
        query = replace(query, person_ids=person_ids(lib, query.people))
    return query


def _merge(query: Query, parsed: ParsedQuery) -> Query:
    """The fields the parse found and the query did not give explicitly (explicit ones won in ``explain``)."""
    first = query.terms[0]
    terms = query.terms if not parsed.text else (Term(first.kind, parsed.text, first.weight), *query.terms[1:])
    if not parsed.text:  # the text was all filters ("photos from 2023"): nothing left to embed
        terms = query.terms[1:]
    return replace(
        query,
        terms=terms,
        after=parse_date(parsed.after) if parsed.after and query.after is None else query.after,
        before=parse_date(parsed.before) if parsed.before and query.before is None else query.before,
        place=query.place or (parsed.place.name.lower() if parsed.place else None),
        people=query.people or tuple(parsed.people),
        kind=query.kind or parsed.kind,
        ocr=query.ocr or tuple(parsed.ocr),
        sort=parsed.sort or query.sort,
        parse_text=False,
    )


def _date_text(when: float | None) -> str | None:
    return None if when is None else dt.datetime.fromtimestamp(when).date().isoformat()
