"""The one-line query parser: a phrase table against a fixed "now", and the invariants of any parse."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mediasearch.geo.gazetteer import Gazetteer, gazetteer
from mediasearch.search.parse import parse_query
from mediasearch.search.parse_words import HOLIDAYS, KIND_WORDS, MONTHS, SEASONS, SORT_PHRASES, UNITS

NOW = dt.datetime(2026, 3, 15, 12, 0)  # a Sunday
PEOPLE = ("Alice", "Bob", "Jordan", "Léa", "Rose", "Marie Curie")
LIBRARY_PLACES = ("nice", "antibes", "provence alpes cote d azur", "france")
TABLE = Path(__file__).parent / "data" / "query_phrases.jsonl"
DEFAULTS: dict[str, Any] = {
    "after": None,
    "before": None,
    "place": None,
    "people": [],
    "kind": None,
    "ocr": [],
    "sort": None,
}


def _rows() -> list[Any]:
    rows = [json.loads(line) for line in TABLE.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [
        pytest.param(row, id=row["q"], marks=pytest.mark.xfail(reason=row["xfail"], strict=True))
        if "xfail" in row
        else pytest.param(row, id=row["q"])
        for row in rows
    ]


@pytest.fixture(scope="module")
def gaz() -> Gazetteer:
    return gazetteer()


def test_the_table_is_large_and_has_no_duplicates() -> None:
    queries = [json.loads(line)["q"] for line in TABLE.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(queries) >= 200
    assert len(set(queries)) == len(queries)


@pytest.mark.parametrize("row", _rows())
def test_phrase_table(row: dict[str, Any], gaz: Gazetteer) -> None:
    parsed = parse_query(row["q"], NOW, known_people=PEOPLE, known_places=LIBRARY_PLACES, gazetteer=gaz).to_json()
    got = {**parsed, "place": parsed["place"]["name"] if parsed["place"] else None}
    expected = {**DEFAULTS, **{k: v for k, v in row.items() if k not in ("q", "xfail")}}
    assert got == expected


def test_explain_document_has_the_contract_keys_and_a_place_circle(gaz: Gazetteer) -> None:
    parsed = parse_query("Alice and Bob at the beach in Nice last summer", NOW, known_people=PEOPLE, gazetteer=gaz)
    doc = parsed.to_json()
    assert list(doc) == ["text", "after", "before", "place", "people", "kind", "ocr", "sort"]
    assert set(doc["place"]) == {"name", "lat", "lon", "km"}
    assert abs(doc["place"]["lat"] - 43.70) < 0.05 and abs(doc["place"]["lon"] - 7.27) < 0.05
    assert 3 <= doc["place"]["km"] <= 20
    assert [p.field for p in parsed.parts] == ["people", "people", "place", "date"]


def test_dates_are_ranges_not_days(gaz: Gazetteer) -> None:
    for phrase, days in (("May 2024", 31), ("in 2023", 365), ("last summer", 92), ("Christmas 2022", 3)):
        parsed = parse_query(phrase, NOW, gazetteer=gaz)
        assert parsed.after is not None and parsed.before is not None
        assert (parsed.before - parsed.after).days == days, phrase


def test_the_same_word_for_a_person_and_a_place_filters_only_with_a_cue(gaz: Gazetteer) -> None:
    alone = parse_query("Jordan", NOW, known_people=PEOPLE, gazetteer=gaz)
    assert (alone.people, alone.place, alone.text) == ((), None, "Jordan")
    assert parse_query("with Jordan", NOW, known_people=PEOPLE, gazetteer=gaz).people == ("Jordan",)
    place = parse_query("in Jordan", NOW, known_people=PEOPLE, gazetteer=gaz).place
    assert place is not None and place.kind == "country"


def test_a_library_place_lets_an_everyday_word_be_a_place(gaz: Gazetteer) -> None:
    without = parse_query("picnic in nice", NOW, gazetteer=gaz)
    with_library = parse_query("picnic in nice", NOW, known_places=["nice"], gazetteer=gaz)
    assert without.place is None and without.text == "picnic in nice"
    assert with_library.place is not None and with_library.place.name == "Nice"
    assert with_library.text == "picnic nice"  # the word is also what CLIP may look for


# -- invariants ---------------------------------------------------------------------------------

_VOCAB = sorted(
    {
        *MONTHS,
        *SEASONS,
        *HOLIDAYS,
        *UNITS,
        *KIND_WORDS,
        *SORT_PHRASES,
        "last",
        "this",
        "in",
        "near",
        "with",
        "and",
        "from",
        "to",
        "between",
        "since",
        "before",
        "after",
        "ago",
        "il",
        "y",
        "a",
        "vor",
        "hace",
        "dernier",
        "pasado",
        "letzten",
        "Paris",
        "Nice",
        "nice",
        "Japan",
        "Jordan",
        "Alice",
        "Bob",
        "Léa",
        "Marie",
        "Curie",
        "2023",
        "1999",
        "12",
        "2",
        "says",
        '"wifi"',
        '"free',
        'wifi"',
        '"',
        "«",
        "»",
        "the",
        "of",
        "l'été",
        "à",
        "de",
        "-",
        "2019-2021",
        "2024-05-12",
        "2024-13-45",
        "31",
        "February",
        "Hilton",
        "&",
        ",",
        "'s",
    }
)
_WORDS = st.one_of(st.sampled_from(_VOCAB), st.text(min_size=1, max_size=6))
_QUERIES = st.one_of(st.lists(_WORDS, max_size=12).map(" ".join), st.text(max_size=40))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=_QUERIES)
def test_parsing_never_raises_and_never_loses_a_word(text: str, gaz: Gazetteer) -> None:
    parsed = parse_query(text, NOW, known_people=PEOPLE, known_places=LIBRARY_PLACES, gazetteer=gaz)
    # every input word is in the text or taken by exactly one part (a word kept in the text too is not
    # counted as taken)
    assert sorted(parsed.text.split() + list(parsed.consumed)) == sorted(text.split())
    assert sum(len(p.words.split()) for p in parsed.parts) >= len(parsed.consumed)
    if parsed.after is not None and parsed.before is not None:
        assert parsed.after < parsed.before
    json.dumps(parsed.to_json())
    assert parse_query(text, NOW, known_people=PEOPLE, known_places=LIBRARY_PLACES, gazetteer=gaz) == parsed
