"""From the query a front end sent to the query the store runs: the one-line parse and people's names.

Runs where the home is (this process, or the daemon), since both need what the home holds: the names
of its people and of its places. ``query --explain`` shows :func:`explain`'s answer instead of searching.
Explicit fields always win over what the text says.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Container, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from mediasearch.library.types import Explanation
from mediasearch.library.wire import from_json
from mediasearch.search.query import Query, Term

if TYPE_CHECKING:
    from mediasearch.search.parse import ParsedQuery

# ``lib`` below is the LocalLibrary that asks (not imported: it imports this module).
LocalLibrary = Any


class _LibraryPlaces(Container[str]):
    """The folded place names of the library's files, read from the store the first time one is asked for."""

    def __init__(self, lib: LocalLibrary) -> None:
        self.lib = lib
        self.names: frozenset[str] | None = None

    def __contains__(self, name: object) -> bool:
        if self.names is None:
            self.names = frozenset(self.lib.place_names())
        return name in self.names

    def __iter__(self) -> Iterator[str]:  # pragma: no cover - the parser only asks about words
        return iter(self.names or ())


def parse(lib: LocalLibrary, query: Query) -> ParsedQuery | None:
    """What the query's one-line text says (``search.parse``), or None when it is literal or has no text."""
    if not query.parse_text or not query.terms or query.terms[0].kind != "text":
        return None
    from mediasearch.search.parse import parse_query

    return parse_query(query.terms[0].value, dt.datetime.now(), lib.people_names(), _LibraryPlaces(lib))


def explain(lib: LocalLibrary, query: Query) -> Explanation:
    """The query as the search reads it: the parse of its text, with the explicit fields winning."""
    parsed = parse(lib, query)
    if parsed is not None:
        reading = from_json(Explanation, parsed.to_json())
    else:
        text = query.terms[0].value if query.terms and query.terms[0].kind == "text" else None
        reading = Explanation(text=text)
    explicit: dict[str, Any] = {
        "after": _iso(query.after),
        "before": _iso(query.before),
        "people": list(query.people),
        "kind": query.kind,
        "ocr": list(query.ocr),
        "sort": query.sort if query.sort != "score" else None,
    }
    if query.near is not None or query.place is not None:
        explicit["place"] = None  # an explicit place or circle replaces the one the text names
    return replace(reading, **{k: v for k, v in explicit.items() if v or k == "place"})


def resolve(lib: LocalLibrary, query: Query) -> Query:
    """``query`` with its text parsed (unless literal) and its people's names turned into person ids."""
    parsed = parse(lib, query)
    if parsed is not None:
        query = _merge(query, parsed)
    if query.people:
        query = replace(query, person_ids=lib.person_ids(list(query.people)))
    return query


def _merge(query: Query, parsed: ParsedQuery) -> Query:
    """The fields the parse found that the query does not give explicitly; the text becomes what is left."""
    first, rest = query.terms[0], query.terms[1:]
    terms = ((Term(first.kind, parsed.text, first.weight),) if parsed.text else ()) + rest
    sort = parsed.sort if query.sort == "score" and parsed.sort else query.sort
    if not any(t.weight > 0 for t in terms):  # "photos from last summer": all filters, nothing to look for
        terms = query.terms  # CLIP ranks what the filters keep by the whole query; shown newest first
        sort = "date" if sort == "score" else sort
    place, near = query.place, query.near
    if parsed.place is not None and place is None and near is None:
        from mediasearch.geo.names import fold

        circle = parsed.place.kind == "city"  # a city is a circle; a region or country, the names stored
        near = (parsed.place.lat, parsed.place.lon, parsed.place.km) if circle else None
        place = None if circle else fold(parsed.place.name)
    return replace(
        query,
        terms=terms,
        after=query.after if query.after is not None else _time(parsed.after),
        before=query.before if query.before is not None else _time(parsed.before),
        place=place,
        near=near,
        people=query.people or tuple(parsed.people),
        kind=query.kind or parsed.kind,
        ocr=query.ocr or tuple(parsed.ocr),
        sort=sort,
        parse_text=False,
    )


def _time(when: dt.datetime | None) -> float | None:
    return None if when is None else when.timestamp()


def _iso(when: float | None) -> str | None:
    """A POSIX time as the parse shows one: the date alone at midnight, else the local time to the second."""
    if when is None:
        return None
    local = dt.datetime.fromtimestamp(when)
    return local.date().isoformat() if local.time() == dt.time() else local.isoformat(timespec="seconds")
