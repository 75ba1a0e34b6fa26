"""The offline gazetteer: names to places with a radius, points to city, region and country."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mediasearch.geo.gazetteer import Gazetteer, city_km, gazetteer, haversine_km
from mediasearch.geo.names import fold


@pytest.fixture(scope="module")
def gaz() -> Gazetteer:
    return gazetteer()


@pytest.mark.parametrize(
    ("point", "city", "town", "country"),
    [
        ((43.7009, 7.2683), "Nice", "", "France"),
        ((48.8584, 2.2945), "Paris", "Paris ", "France"),
        ((35.6586, 139.7454), "Tokyo", "Minato", "Japan"),
        ((-33.8568, 151.2153), "Sydney", "", "Australia"),
        ((43.5804, 7.1251), "Antibes", "", "France"),
    ],
)
def test_reverse_names_the_city_holding_the_point_its_region_and_country(
    gaz: Gazetteer, point: tuple[float, float], city: str, town: str, country: str
) -> None:
    location = gaz.reverse(*point)
    assert location is not None
    assert (location.city, location.country) == (city, country)
    assert location.region
    if town:  # the district (nearer than any town: not a suburb) is a place name too
        assert location.town.startswith(town)
        assert fold(location.town) in location.names()
    assert fold(country) in location.names() and fold(city) in location.names()


def test_reverse_far_from_any_town_is_no_place(gaz: Gazetteer) -> None:
    assert gaz.reverse(0.0, -140.0) is None  # the middle of the Pacific
    assert gaz.reverse_many([]) == []


@pytest.mark.parametrize(
    ("name", "expected", "kind"),
    [
        ("Nice", "Nice", "city"),
        ("paris", "Paris", "city"),
        ("München", "Munich", "city"),
        ("Cologne", "Köln", "city"),
        ("japan", "Japan", "country"),
        ("USA", "United States", "country"),
        ("the uk", "United Kingdom", "country"),
        ("Deutschland", "Germany", "country"),
        ("Espagne", "Spain", "country"),
        ("California", "California", "region"),
        ("Tokyo", "Tokyo", "city"),
        ("ZÜRICH", "Zürich", "city"),
    ],
)
def test_lookup_understands_case_accents_and_common_names(gaz: Gazetteer, name: str, expected: str, kind: str) -> None:
    place = gaz.lookup(name)
    assert place is not None and (place.name, place.kind) == (expected, kind)


def test_lookup_prefers_the_country_then_the_biggest_city(gaz: Gazetteer) -> None:
    jordan = gaz.candidates("Jordan")
    assert jordan[0].kind == "country" and len(jordan) >= 2  # and a town in Hong Kong
    paris = gaz.lookup("Paris")
    assert paris is not None and paris.country == "France"  # not Paris, Texas
    assert gaz.lookup("no such place anywhere") is None


def test_a_country_is_larger_than_its_cities(gaz: Gazetteer) -> None:
    france, nice = gaz.lookup("France"), gaz.lookup("Nice")
    assert france is not None and nice is not None
    assert france.km > 300 > 20 > nice.km
    assert haversine_km(france.lat, france.lon, nice.lat, nice.lon) < france.km * 1.5


@settings(max_examples=200, deadline=None)
@given(a=st.integers(0, 40_000_000), b=st.integers(0, 40_000_000))
def test_a_city_radius_grows_with_its_population_within_bounds(a: int, b: int) -> None:
    low, high = sorted((a, b))
    assert 3.0 <= city_km(low) <= city_km(high) <= 40.0


@settings(max_examples=100, deadline=None)
@given(lat=st.floats(-89.9, 89.9), lon=st.floats(-180, 180))
def test_reverse_is_within_its_limit_and_agrees_with_reverse_many(lat: float, lon: float) -> None:
    gaz = gazetteer()
    one = gaz.reverse(lat, lon)
    assert gaz.reverse_many([(lat, lon), (lat, lon)]) == [one, one]
    if one is not None:
        assert one.country and one.city


def test_the_forward_table_is_cached_and_reopened(tmp_path: Path) -> None:
    first = Gazetteer(tmp_path)
    assert first.lookup("Lyon") is not None
    assert list(tmp_path.glob("gazetteer-*.sqlite"))
    reopened = Gazetteer(tmp_path)  # reads the file: same answers
    assert reopened.lookup("Lyon") == first.lookup("Lyon")
    assert reopened.candidates("Jordan") == first.candidates("Jordan")
