"""The one-line query parser: "Alice and Bob at the beach in Nice last summer" → filters and CLIP text.

``parse_query`` takes out of one string the dates and ranges, a place, the people named, the media
kind, quoted words (recognised text) and an order, and leaves the rest as the text CLIP searches
for. No model and no network: word tables, date rules (``parse_dates``) and the offline gazetteer
(``geo``). Where a phrase could mean two things it is not taken as a filter ("Paris Hilton", "May"
alone, "Jordan" when a person and a country bear that name); a word that is a filter and also says
what the picture shows (a holiday, "screenshots") stays in the text too. docs/query-parser.md says
how each case is resolved.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import unicodedata
from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mediasearch.geo.gazetteer import Gazetteer, Place
from mediasearch.geo.names import fold
from mediasearch.ocr.text import query_words
from mediasearch.search import parse_dates
from mediasearch.search.parse_words import (
    COMMON_WORDS,
    KIND_KEPT,
    KIND_NEEDS_OF,
    KIND_OF,
    KIND_WORDS,
    OCR_TRIGGERS,
    PEOPLE_AND,
    PEOPLE_WITH,
    PLACE_IN,
    PLACE_NEAR,
    SORT_PHRASES,
)

_OUTER = "\"'“”«»„‚‘’.,;:!?()[]{}<>*"
_OPEN_QUOTES = "\"“«„‘'"
_CLOSE_QUOTES = "\"”»“’'"
_CONNECTORS = frozenset(
    "of from with and in at on to de des du d' von vom aus mit con y et und & , - im am for during pendant "
    "durante".split()
)
# Holiday words also say what the picture shows (a tree, eggs, costumes): kept in the CLIP text.
_HOLIDAY_WORDS = frozenset(
    "christmas xmas noel weihnachten navidad navidades heiligabend easter paques ostern pascua halloween "
    "thanksgiving valentine's valentines valentin valentinstag".split()
)
_MAX_PLACE_WORDS = 6
_TOWN_POPULATION = 15_000  # below it (GeoNames' small places), a name needs a capital or the library's photos
_LOWERCASE_CITY_POPULATION = 100_000  # a city written in lowercase must be this big ("in london", "in nice")


@dataclass(frozen=True)
class Part:
    """One parsed part as written, for the page's chips: field is date, place, people, kind, ocr or sort."""

    field: str
    words: str


@dataclass(frozen=True)
class ParsedQuery:
    """What a one-line query asks for; ``text`` is what CLIP searches (may be empty)."""

    text: str
    after: dt.datetime | None = None  # local time, inclusive
    before: dt.datetime | None = None  # local time, exclusive
    place: Place | None = None
    people: tuple[str, ...] = ()
    kind: str | None = None
    ocr: tuple[str, ...] = ()
    sort: str | None = None  # "date" (newest first) | "oldest"
    parts: tuple[Part, ...] = ()
    consumed: tuple[str, ...] = field(default=(), repr=False)  # input words taken out of the text

    def to_json(self) -> dict[str, Any]:
        """The explain document: {"text","after","before","place","people","kind","ocr","sort"}."""
        return {
            "text": self.text,
            "after": _iso(self.after),
            "before": _iso(self.before),
            "place": self.place.to_json() if self.place else None,
            "people": list(self.people),
            "kind": self.kind,
            "ocr": list(self.ocr),
            "sort": self.sort,
        }

    @property
    def empty(self) -> bool:
        """True when nothing but text was found."""
        return not self.parts


def _iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    return value.date().isoformat() if value.time() == dt.time() else value.isoformat(timespec="seconds")


def word_key(raw: str) -> str:
    """A written word as the rules compare it: lowercase, no accents, no outer punctuation."""
    text = raw.casefold().replace("’", "'").replace("‘", "'")
    if not text.isascii():
        text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    stripped = text.strip(_OUTER)
    return stripped or text


@dataclass
class _Token:
    raw: str
    key: str
    owner: str | None = None  # the part that took it
    kept: bool = False  # taken, and still in the text

    @property
    def capital(self) -> bool:
        first = self.raw.lstrip(_OUTER)[:1]
        return first.isupper()


class _Scan:
    """The query's words and which part took each."""

    def __init__(self, text: str) -> None:
        self.tokens = [_Token(raw, word_key(raw)) for raw in text.split()]
        self.spans: list[list[Any]] = []  # [first word, end, field]

    def joined(self) -> tuple[str, list[int]]:
        """The free words' keys joined by spaces (taken ones masked), and where each word starts."""
        pieces, starts, pos = [], [], 0
        for t in self.tokens:
            starts.append(pos)
            piece = t.key if t.owner is None else "\x00" * len(t.key)
            pieces.append(piece)
            pos += len(piece) + 1
        return " ".join(pieces), starts

    def span(self, starts: list[int], begin: int, end: int) -> tuple[int, int] | None:
        """The words [i, j) a match covers, or None when it does not start and end at word bounds."""
        if begin not in starts:
            return None
        i = starts.index(begin)
        for j in range(i, len(self.tokens)):
            if starts[j] + len(self.joined_key(j)) == end:
                return i, j + 1
        return None

    def joined_key(self, j: int) -> str:
        return self.tokens[j].key

    def free(self, i: int, j: int) -> bool:
        return 0 <= i < j <= len(self.tokens) and all(t.owner is None for t in self.tokens[i:j])

    def take(self, i: int, j: int, part: str, *, kept: Callable[[str], bool] = lambda key: False) -> None:
        for t in self.tokens[i:j]:
            t.owner = part
            t.kept = kept(t.key)
        self.spans.append([i, j, part])

    def parts(self) -> tuple[Part, ...]:
        return tuple(Part(f, " ".join(t.raw for t in self.tokens[i:j])) for i, j, f in sorted(self.spans))

    def find(self, pattern: re.Pattern[str]) -> Iterable[tuple[re.Match[str], int, int]]:
        """Matches over free words that start and end at word bounds, left to right."""
        text, starts = self.joined()
        for m in pattern.finditer(text):
            found = self.span(starts, m.start(), m.end())
            if found is not None and self.free(*found):
                yield m, found[0], found[1]


def parse_query(
    text: str,
    now: dt.datetime,
    known_people: Sequence[str] = (),
    known_places: Container[str] = (),
    gazetteer: Gazetteer | None = None,
) -> ParsedQuery:
    """Parse a one-line query against ``now`` (local time), the library's named people and its places
    (folded names, as in payload ``places``: asked only about a word that needs them, so it may be
    lazy); ``gazetteer`` defaults to the process's one."""
    scan = _Scan(text)
    ocr = _take_quotes(scan)
    sort = _take_sort(scan)
    after, before = _take_dates(scan, now)
    places = known_places
    gaz = gazetteer if gazetteer is not None else _default_gazetteer()
    people = _take_people(scan, known_people, gaz, places)
    place = _take_place(scan, gaz, places)
    kind = _take_kind(scan)
    _take_connectors(scan)
    return ParsedQuery(
        text=" ".join(t.raw for t in scan.tokens if t.owner is None or t.kept),
        after=after,
        before=before,
        place=place,
        people=people,
        kind=kind,
        ocr=ocr,
        sort=sort,
        parts=scan.parts(),
        consumed=tuple(t.raw for t in scan.tokens if t.owner is not None and not t.kept),
    )


def _default_gazetteer() -> Gazetteer:
    from mediasearch.geo.gazetteer import gazetteer

    return gazetteer()


# -- recognised text ----------------------------------------------------------------------------

_TRIGGERS = [(tuple(t.split()), len(t.split())) for t in sorted(OCR_TRIGGERS, key=lambda t: -len(t.split()))]


def _take_quotes(scan: _Scan) -> tuple[str, ...]:
    words: list[str] = []
    tokens = scan.tokens
    i = 0
    while i < len(tokens):
        raw = tokens[i].raw
        if raw[:1] in _OPEN_QUOTES and tokens[i].owner is None:
            close = _closing(tokens, i)
            if close is not None:
                quoted = " ".join(t.raw for t in tokens[i : close + 1])
                inner = quoted.strip().strip(_OUTER)
                start = _trigger_before(scan, i)
                folded = query_words(inner)
                if folded:
                    scan.take(start, close + 1, "ocr")
                    words.extend(w for w in folded if w not in words)
                i = close + 1
                continue
        i += 1
    return tuple(words)


def _closing(tokens: list[_Token], i: int) -> int | None:
    """The word that closes a quote opened at word i ('"free wifi"' may span words)."""
    first = tokens[i].raw
    if len(first) > 1 and first.rstrip(".,;:!?)")[-1:] in _CLOSE_QUOTES and first.rstrip(".,;:!?)") != first[:1]:
        return i
    for j in range(i + 1, len(tokens)):
        if tokens[j].raw[:1] in _OPEN_QUOTES and tokens[j].raw.rstrip(".,;:!?)")[-1:] not in _CLOSE_QUOTES:
            return None  # another quote opens first: unbalanced
        if tokens[j].raw.rstrip(".,;:!?)")[-1:] in _CLOSE_QUOTES:
            return j
    return None


def _trigger_before(scan: _Scan, i: int) -> int:
    keys = [t.key for t in scan.tokens]
    for words, n in _TRIGGERS:
        if i - n >= 0 and tuple(keys[i - n : i]) == words and scan.free(i - n, i):
            return i - n
    return i


# -- order, dates -------------------------------------------------------------------------------

_SORT = re.compile(
    r"(?<![^ ])(?:" + "|".join(re.escape(p) for p in sorted(SORT_PHRASES, key=len, reverse=True)) + r")(?![^ ])"
)


def _take_sort(scan: _Scan) -> str | None:
    for m, i, j in scan.find(_SORT):
        scan.take(i, j, "sort")
        return SORT_PHRASES[m[0]]
    return None


def _take_dates(scan: _Scan, now: dt.datetime) -> tuple[dt.datetime | None, dt.datetime | None]:
    after: dt.datetime | None = None
    before: dt.datetime | None = None
    bare = parse_dates.RULES[-1][0]  # "in May", "at Christmas": a month or a holiday without a year
    for pattern, handler in parse_dates.RULES:
        for m, i, j in list(scan.find(pattern)):
            if not scan.free(i, j):
                continue
            if (
                pattern is bare
                and j < len(scan.tokens)
                and scan.tokens[j].owner is None
                and scan.tokens[j].key not in _CONNECTORS
            ):
                continue  # "at christmas market", "in may flowers": the word describes what follows
            found = handler(m, now)
            if found is None:
                continue
            start, end = found
            new_after = max((d for d in (after, start) if d is not None), default=None)
            new_before = min((d for d in (before, end) if d is not None), default=None)
            if new_after is not None and new_before is not None and new_after >= new_before:
                continue  # contradicts a date already taken: left in the text
            after, before = new_after, new_before
            scan.take(i, j, "date", kept=lambda key: key in _HOLIDAY_WORDS)
    return after, before


# -- people -------------------------------------------------------------------------------------


def _person_key(key: str) -> str:
    return key[:-2] if key.endswith(("'s", "’s")) else key


def _take_people(scan: _Scan, known: Sequence[str], gaz: Gazetteer, places: Container[str]) -> tuple[str, ...]:
    names = sorted({fold(n): n for n in known if fold(n)}.items(), key=lambda kv: -len(kv[0].split()))
    if not names:
        return ()
    found: list[tuple[int, int, str]] = []  # (first word, end, name)
    tokens = scan.tokens
    for folded, name in names:
        size = len(folded.split())
        for i in range(len(tokens) - size + 1):
            words = [_person_key(t.key) for t in tokens[i : i + size]]
            if (
                " ".join(fold(w) for w in words) == folded
                and scan.free(i, i + size)
                and not any(a <= i < b or a < i + size <= b for a, b, _ in found)
            ):
                found.append((i, i + size, name))
    found.sort()
    taken: list[str] = []
    for n, (i, j, name) in enumerate(found):
        linked = (i > 0 and tokens[i - 1].key in PEOPLE_WITH | PEOPLE_AND) or (
            n + 1 < len(found) and found[n + 1][0] == j + 1 and tokens[j].key in PEOPLE_AND
        )
        if not linked and _also_a_place(fold(name), gaz, places):
            continue  # "Jordan" alone: a person or a country, so neither
        if not linked and not tokens[i].capital and fold(name) in COMMON_WORDS:
            continue  # "a red rose" when Rose is a person
        start = i - 1 if i > 0 and tokens[i - 1].key in PEOPLE_WITH | PEOPLE_AND and scan.free(i - 1, i) else i
        scan.take(start, j, "people")
        if name not in taken:
            taken.append(name)
    return tuple(taken)


def _also_a_place(folded: str, gaz: Gazetteer, places: Container[str]) -> bool:
    if folded in places:
        return True
    place = gaz.lookup_folded(folded)
    return place is not None and (place.kind != "city" or place.population >= 100_000)


# -- places -------------------------------------------------------------------------------------

_PREPOSITIONS = sorted((tuple(p.split()) for p in (*PLACE_NEAR, *PLACE_IN)), key=lambda p: -len(p))
_ARTICLES = frozenset({"the", "la", "le", "les", "l'", "der", "die", "dem", "den", "el"})


def _take_place(scan: _Scan, gaz: Gazetteer, places: Container[str]) -> Place | None:
    tokens = scan.tokens
    for i in range(len(tokens)):
        for words in _PREPOSITIONS:
            n = len(words)
            if tuple(t.key for t in tokens[i : i + n]) != words or not scan.free(i, i + n):
                continue
            if words == ("a",) and tokens[i].raw.lower() != "à":
                continue  # the French "à", not the English article
            found = _place_after(scan, i + n, gaz, places)
            if found is None:
                continue
            end, place, also_text = found
            scan.take(i, end, "place", kept=also_text.__contains__)
            return place
    return None


def _place_after(
    scan: _Scan, i: int, gaz: Gazetteer, places: Container[str]
) -> tuple[int, Place, frozenset[str]] | None:
    """The place named from word i on: its end, the place, and the words also kept in the text."""
    tokens = scan.tokens
    start = i + 1 if i < len(tokens) and tokens[i].key in _ARTICLES else i
    for size in range(min(_MAX_PLACE_WORDS, len(tokens) - start), 0, -1):
        end = start + size
        if not scan.free(start, end):
            continue
        name = fold(" ".join(t.raw.strip(_OUTER) for t in tokens[start:end]))
        place = gaz.lookup_folded(name) if name else None
        if place is None or not _plausible(scan, start, end, name, place, places):
            continue
        capital = tokens[start].capital
        if capital and end < len(tokens) and tokens[end].owner is None and tokens[end].capital:
            return None  # "in Paris Hilton": a name goes on, so not a place
        common = name in COMMON_WORDS and not capital
        return end, place, frozenset(t.key for t in tokens[start:end]) if common else frozenset()
    return None


def _plausible(scan: _Scan, start: int, end: int, name: str, place: Place, places: Container[str]) -> bool:
    """Whether words that name a place are meant as one (docs/query-parser.md, "How ambiguity is resolved")."""
    tokens = scan.tokens
    capital = tokens[start].capital
    # more words of the phrase follow ("in nice weather", "in Santa Claus costume"): the name describes
    follows = end < len(tokens) and tokens[end].owner is None and tokens[end].key not in _CONNECTORS
    everyday = name in COMMON_WORDS or name in _everyday_words()
    if name in places:  # the library holds photos taken there
        return capital or not (everyday and follows)
    if place.kind != "city":
        return capital or not everyday  # "in japan", "in usa", "in california"
    if capital:
        return place.population >= _TOWN_POPULATION or not follows
    after_article = start > 0 and tokens[start - 1].key in _ARTICLES  # "from the wedding"
    big = place.population >= _LOWERCASE_CITY_POPULATION and fold(place.name) == name  # "in london", no alias
    return big and not everyday and not after_article


@functools.cache
def _everyday_words() -> frozenset[str]:
    """The words of the built-in tag vocabulary ("sunset", "wedding", "market"): what pictures show."""
    from importlib.resources import files

    text = files("mediasearch").joinpath("data", "vocabulary.txt").read_text(encoding="utf-8")
    lines = (line.split("=")[0].strip().lower() for line in text.splitlines() if not line.startswith("#"))
    return frozenset(line for line in lines if line)


# -- kind, connectors ---------------------------------------------------------------------------


# "a photo of a dog" is how CLIP prompts are written (and what the demo model was trained on), not a
# request for photos only: a kind word after an indefinite article stays in the text and filters nothing.
_INDEFINITE = frozenset({"a", "an", "un", "une", "ein", "eine", "einen", "una"})


def _take_kind(scan: _Scan) -> str | None:
    tokens = scan.tokens
    kinds: set[str] = set()
    spans: list[tuple[int, int]] = []
    for i, t in enumerate(tokens):
        kind = KIND_WORDS.get(t.key)
        if kind is None or t.owner is not None:
            continue
        if i > 0 and tokens[i - 1].key in _INDEFINITE:
            continue
        has_of = i + 1 < len(tokens) and tokens[i + 1].key in KIND_OF and tokens[i + 1].owner is None
        if t.key in KIND_NEEDS_OF and not has_of:
            continue
        kinds.add(kind)
        spans.append((i, i + 2 if has_of and t.key not in KIND_KEPT else i + 1))
    if len(kinds) != 1:
        return None  # none, or "photos and videos": both kinds, so no filter
    for i, j in spans:
        scan.take(i, j, "kind", kept=lambda key: key in KIND_KEPT)
    return kinds.pop()


def _take_connectors(scan: _Scan) -> None:
    """A connector left between taken parts, or last in the text before one ("de l'été dernier"), joins
    the part after it."""
    tokens = scan.tokens
    free = [i for i, t in enumerate(tokens) if t.owner is None]
    for i in reversed(free):
        if tokens[i].key not in _CONNECTORS or i + 1 >= len(tokens) or tokens[i + 1].owner is None:
            continue
        last = i == max(k for k, t in enumerate(tokens) if t.owner is None)
        between = i > 0 and tokens[i - 1].owner is not None
        if not (last or between):
            continue
        tokens[i].owner = tokens[i + 1].owner
        for span in scan.spans:
            if span[0] == i + 1:
                span[0] = i
