"""Dates and date ranges in a one-line query: "last summer", "Christmas 2022", "between March and June 2021".

Rules over the query's folded words (``parse.py`` joins them with single spaces). Each rule gives a
range [start, end): calendar units are whole (a month is its first day to the next month's first
day), seasons are meteorological (summer: June to August; winter: December to February), relative
phrases count back from ``now``. dateparser reads single dates well but gives one day for "May 2024"
and nothing for "last summer" or "letzten Sommer", and costs ~15 ms a phrase, so these rules are ours.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass

from mediasearch.search.parse_words import HOLIDAYS, MONTHS, NUMBERS, SEASONS, UNITS

Range = tuple[dt.datetime | None, dt.datetime | None]  # [after, before): either may be open


def _alt(words: object) -> str:
    return "(?:" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)) + ")"  # type: ignore[call-overload]


MONTH = _alt(MONTHS)
SEASON = _alt(SEASONS)
HOLIDAY = _alt(HOLIDAYS)
NUM = r"(?:\d{1,3}|" + _alt(NUMBERS)[3:]
UNIT = _alt(UNITS)
YEAR = r"(?:19|20)\d\d"
_ORD = r"(?:st|nd|rd|th|er|e|\.)?"
_OF = r"(?:of |de |del |in |im )?"
_THE = r"(?:the |l'|le |la |el |der |die |das |im |en el |en la )?"

# A point in time with its own year or day; the bare ones (a month, a season, a holiday) need context.
_FULL = {
    "iso_day": r"(?P<y>\d{4})-(?P<m>\d{1,2})-(?P<d>\d{1,2})",
    "iso_month": r"(?P<y>\d{4})-(?P<m>\d{1,2})",
    "dmy": rf"(?P<d>\d{{1,2}}){_ORD} (?:of |de )?(?P<mn>{MONTH})(?: (?:de |del )?(?P<y>{YEAR}))?",
    "mdy": rf"(?P<mn>{MONTH}) (?P<d>\d{{1,2}}){_ORD}(?: (?P<y>{YEAR}))?",
    "season_y": rf"{_THE}(?P<s>{SEASON}) {_OF}(?P<y>{YEAR})",
    "holiday_y": rf"(?P<h>{HOLIDAY}) {_OF}(?P<y>{YEAR})",
    "month_y": rf"(?P<mn>{MONTH}) {_OF}(?P<y>{YEAR})",
    "year": rf"(?P<y>{YEAR})",
}
_BARE = {
    "month": rf"(?P<mn>{MONTH})",
    "season": rf"{_THE}(?P<s>{SEASON})",
    "holiday": rf"{_THE}(?P<h>{HOLIDAY})",
}
_POINT_PARTS = {name: re.compile(pattern) for name, pattern in {**_FULL, **_BARE}.items()}


def _strip_groups(pattern: str) -> str:
    return re.sub(r"\(\?P<\w+>", "(?:", pattern)


FULL_POINT = "(?:" + "|".join(_strip_groups(p) for p in _FULL.values()) + ")"
POINT = "(?:" + "|".join(_strip_groups(p) for p in (*_FULL.values(), *_BARE.values())) + ")"


# -- calendar helpers ---------------------------------------------------------------------------


def _day(d: dt.date) -> dt.datetime:
    return dt.datetime(d.year, d.month, d.day)


def _add_months(year: int, month: int, n: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + n
    return index // 12, index % 12 + 1


def month_range(year: int, month: int, months: int = 1) -> Range:
    ny, nm = _add_months(year, month, months)
    return dt.datetime(year, month, 1), dt.datetime(ny, nm, 1)


def _easter(year: int) -> dt.date:
    from dateutil.easter import easter

    return easter(year)


def holiday_range(year: int, key: str) -> Range:
    """The days people take pictures of a holiday, of one year."""
    fixed = {
        "christmas": (12, 24, 3),
        "nye": (12, 31, 2),
        "newyear": (1, 1, 1),
        "halloween": (10, 31, 1),
        "valentine": (2, 14, 1),
        "july4": (7, 4, 1),
        "july14": (7, 14, 1),
    }
    if key in fixed:
        month, day, days = fixed[key]
        start = dt.datetime(year, month, day)
        return start, start + dt.timedelta(days=days)
    if key == "easter":  # Good Friday to Easter Monday
        sunday = _day(_easter(year))
        return sunday - dt.timedelta(days=2), sunday + dt.timedelta(days=2)
    # Thanksgiving: the fourth Thursday of November and its weekend
    first = dt.date(year, 11, 1)
    thursday = first + dt.timedelta(days=(3 - first.weekday()) % 7 + 21)
    return _day(thursday), _day(thursday) + dt.timedelta(days=4)


def season_range(year: int, first_month: int) -> Range:
    return month_range(year, first_month, 3)


def _recent(now: dt.datetime, make: Callable[[int], Range], *, ended: bool) -> Range:
    """The latest of make(year) that has begun (``ended``: that is over) by ``now``."""
    for year in range(now.year + 1, now.year - 3, -1):
        start, end = make(year)
        assert start is not None and end is not None
        if (end <= now) if ended else (start <= now):
            return start, end
    return make(now.year - 1)


def unit_range(now: dt.datetime, unit: str, back: int) -> Range:
    """The calendar day, week (from Monday), month or year ``back`` units before the one holding ``now``."""
    today = _day(now.date())
    if unit == "day":
        start = today - dt.timedelta(days=back)
        return start, start + dt.timedelta(days=1)
    if unit == "week":
        start = today - dt.timedelta(days=today.weekday() + 7 * back)
        return start, start + dt.timedelta(days=7)
    if unit == "month":
        return month_range(*_add_months(now.year, now.month, -back))
    return dt.datetime(now.year - back, 1, 1), dt.datetime(now.year - back + 1, 1, 1)


def rolling_start(now: dt.datetime, unit: str, n: int) -> dt.datetime:
    """The start of the day ``n`` units before now (for "the past 3 weeks")."""
    today = _day(now.date())
    if unit in ("day", "week"):
        return today - dt.timedelta(days=n * (7 if unit == "week" else 1))
    months = n * (12 if unit == "year" else 1)
    y, m = _add_months(today.year, today.month, -months)
    return dt.datetime(y, m, min(today.day, calendar.monthrange(y, m)[1]))


def _weekend(now: dt.datetime, back: int) -> Range:
    today = _day(now.date())
    saturday = today - dt.timedelta(days=(today.weekday() - 5) % 7)
    if back:
        saturday -= dt.timedelta(days=7 * back) if today.weekday() >= 5 else dt.timedelta(days=7 * (back - 1))
    return saturday, saturday + dt.timedelta(days=2)


# -- points -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    """A point expression's range, and whether it named its year."""

    start: dt.datetime
    end: dt.datetime
    has_year: bool


def _number(text: str) -> int:
    return int(text) if text.isdigit() else NUMBERS[text]


def point(text: str, now: dt.datetime, year: int | None = None) -> Point | None:
    """The range a point expression names; ``year`` stands in for a missing year (else the latest one)."""
    for name, pattern in _POINT_PARTS.items():
        m = pattern.fullmatch(text)
        if m is None:
            continue
        try:
            found = _point_range(name, m.groupdict(), now, year)
        except ValueError:  # "31 February", month 13
            return None
        if found is not None:
            return found
    return None


def _point_range(name: str, g: dict[str, str | None], now: dt.datetime, year: int | None) -> Point | None:
    y = int(g["y"] or 0) if g.get("y") else None
    has_year = y is not None
    y = y if y is not None else year

    def latest(make: Callable[[int], Range]) -> Range:
        return make(y) if y is not None else _recent(now, make, ended=False)

    if name in ("iso_day", "dmy", "mdy"):
        month = int(g["m"] or 0) if g.get("m") else MONTHS[g["mn"] or ""]
        day = int(g["d"] or 0)
        rng = latest(lambda yy: (dt.datetime(yy, month, day), dt.datetime(yy, month, day) + dt.timedelta(days=1)))
    elif name in ("iso_month", "month_y", "month"):
        month = int(g["m"] or 0) if g.get("m") else MONTHS[g["mn"] or ""]
        rng = latest(lambda yy: month_range(yy, month))
    elif name in ("season_y", "season"):
        first = SEASONS[g["s"] or ""]
        rng = latest(lambda yy: season_range(yy, first))
    elif name in ("holiday_y", "holiday"):
        key = HOLIDAYS[g["h"] or ""]
        rng = latest(lambda yy: holiday_range(yy, key))
    else:
        assert y is not None
        rng = (dt.datetime(y, 1, 1), dt.datetime(y + 1, 1, 1))
    start, end = rng
    assert start is not None and end is not None
    return Point(start, end, has_year)


# -- rules over the whole query -----------------------------------------------------------------

Rule = tuple["re.Pattern[str]", Callable[["re.Match[str]", dt.datetime], "Range | None"]]


def _between(m: re.Match[str], now: dt.datetime) -> Range | None:
    b = point(m["b"], now)
    if b is None:
        return None
    a = point(m["a"], now, b.start.year)
    if a is not None and not a.has_year and a.start >= b.end:  # "from November to February 2021"
        a = point(m["a"], now, b.start.year - 1)
    if a is None or a.start >= b.end:
        return None
    return a.start, b.end


def _since(m: re.Match[str], now: dt.datetime) -> Range | None:
    a = point(m["a"], now)
    return None if a is None else (a.start, None)


def _after(m: re.Match[str], now: dt.datetime) -> Range | None:
    a = point(m["a"], now)
    return None if a is None else (a.end, None)


def _before(m: re.Match[str], now: dt.datetime) -> Range | None:
    a = point(m["a"], now)
    return None if a is None else (None, a.start)


def _ago(m: re.Match[str], now: dt.datetime) -> Range | None:
    return unit_range(now, UNITS[m["u"]], _number(m["n"]))


def _past(m: re.Match[str], now: dt.datetime) -> Range | None:
    return rolling_start(now, UNITS[m["u"]], _number(m["n"])), None


_LAST_WORDS = {
    "last",
    "previous",
    "dernier",
    "derniere",
    "passe",
    "passee",
    "letzte",
    "letzten",
    "letztes",
    "letzter",
    "vorige",
    "vorigen",
    "voriges",
    "vergangene",
    "vergangenen",
    "vergangenes",
    "pasado",
    "pasada",
    "anterior",
}


def _unit_word(word: str) -> str:
    return (
        "weekend"
        if word.replace("-", " ") in ("weekend", "week end", "wochenende", "fin de semana")
        else UNITS.get(word, "day")
    )


def _last_unit(m: re.Match[str], now: dt.datetime) -> Range | None:
    unit = _unit_word(m["u"])
    back = 1 if m["w"] in _LAST_WORDS else 0
    if m["w"] == "past":  # "the past week": the last seven days
        return rolling_start(now, unit if unit != "weekend" else "week", 1), None
    return _weekend(now, back) if unit == "weekend" else unit_range(now, unit, back)


def _day_word(m: re.Match[str], now: dt.datetime) -> Range | None:
    word = m[0]
    back = 0 if re.fullmatch(r"today|aujourd'hui|heute|hoy|tonight|ce soir|heute abend|esta noche", word) else 1
    if re.fullmatch(r"the day before yesterday|avant hier|avant-hier|vorgestern|anteayer|antier", word):
        back = 2
    return unit_range(now, "day", back)


def _named(word: str) -> Callable[[int], Range]:
    if word in SEASONS:
        return lambda y: season_range(y, SEASONS[word])
    if word in HOLIDAYS:
        return lambda y: holiday_range(y, HOLIDAYS[word])
    return lambda y: month_range(y, MONTHS[word])


def _last_named(m: re.Match[str], now: dt.datetime) -> Range | None:
    """'last summer', "l'été dernier", 'letzten Sommer', 'el verano pasado', 'this May'."""
    make = _named(m["s"])
    if m["w"] in _LAST_WORDS:
        return _recent(now, make, ended=True)
    if m["w"] == "last year":
        return make(now.year - 1)
    for year in (now.year, now.year - 1):  # "this summer": the one under way, else this year's
        start, end = make(year)
        if start is not None and end is not None and start <= now < end:
            return start, end
    return make(now.year)


def _full(m: re.Match[str], now: dt.datetime) -> Range | None:
    a = point(m["a"], now)
    return None if a is None else (a.start, a.end)


def _rules() -> list[Rule]:
    last = _alt(_LAST_WORDS)
    this = r"(?:this|current|ce|cet|cette|diese|diesen|dieses|diesem|dieser|este|esta)"
    named = f"(?:{SEASON}|{HOLIDAY}|{MONTH})"
    unit_words = (
        r"week|weekend|week-end|month|year|semaine|mois|annee|an|woche|wochenende|monat|jahr|semana"
        r"|mes|ano|fin de semana"
    )
    prep = (
        r"(?:(?:in|on|during|from|at|around|over|for|en|le|la|au|aux|pendant|durant|a|im|in der|am|um|zu|"
        r"el|en el|durante|del|de|du|of) )?"
    )
    required = r"(?:in|on|during|from|at|for|en|au|pendant|durant|a|im|am|zu|an|durante|del|de|of) "
    table: list[tuple[str, Callable[[re.Match[str], dt.datetime], Range | None]]] = [
        (rf"(?:between|entre|zwischen) (?P<a>{POINT}) (?:and|et|und|y|e) (?P<b>{POINT})", _between),
        (
            rf"(?:from|de|du|von|vom|desde|del) (?P<a>{POINT}) (?:to|until|till|thru|through|a|au|jusqu'a|jusqu'en"
            rf"|bis|bis zum|hasta|al) (?P<b>{POINT})",
            _between,
        ),
        (rf"(?P<a>{FULL_POINT}) (?:to|through|until|till|bis|hasta|-) (?P<b>{FULL_POINT})", _between),
        (rf"(?P<a>{YEAR})-(?P<b>{YEAR})", _between),
        (rf"(?:since|depuis|seit|desde|desde el) (?P<a>{POINT})", _since),
        (rf"(?:after|apres|nach|despues de|despues del) (?P<a>{POINT})", _after),
        (rf"(?:before|prior to|avant|vor|antes de|antes del|until|till|jusqu'a|bis) (?P<a>{POINT})", _before),
        (rf"(?P<n>{NUM}) (?P<u>{UNIT}) ago", _ago),
        (rf"(?:il y a|vor|hace) (?P<n>{NUM}) (?P<u>{UNIT})", _ago),
        (rf"(?:in |during |over |within |from )?(?:the )?(?:last|past) (?P<n>{NUM}) (?P<u>{UNIT})", _past),
        (
            rf"(?:ces |les |pendant les |durant les |depuis les )?(?P<n>{NUM}) (?P<u>{UNIT}) (?:derniers|dernieres)",
            _past,
        ),
        (rf"(?:in den |der |die |seit den )?(?:letzten|vergangenen) (?P<n>{NUM}) (?P<u>{UNIT})", _past),
        (rf"(?:en |durante )?(?:los |las )?(?:ultimos|ultimas) (?P<n>{NUM}) (?P<u>{UNIT})", _past),
        (rf"(?:in the |during the |over the |from |the )?(?P<w>{last}|past|{this}) (?P<u>{unit_words})", _last_unit),
        (
            rf"(?:la |le |l'|el |la |en la |en el |au cours de la |au cours du )?(?P<u>{unit_words}) "
            rf"(?:-ci |ci )?(?P<w>{last})",
            _last_unit,
        ),
        (
            r"the day before yesterday|avant hier|avant-hier|vorgestern|anteayer|antier|today|aujourd'hui|heute"
            r"|hoy|tonight|ce soir|heute abend|esta noche|yesterday|last night|hier soir|hier|gestern abend|gestern"
            r"|ayer|anoche",
            _day_word,
        ),
        (rf"(?:in |during |from |at |over )?(?:the )?(?P<w>{last}|{this}) (?P<s>{named})", _last_named),
        (
            rf"(?:a |au |en |l'|le |la |el |a la |en el |en la |pendant l'|pendant le |durant l'|im |am |zu |an )?"
            rf"(?P<s>{named}) (?P<w>{last})",
            _last_named,
        ),
        (rf"(?:in |during |from |at |over )?(?:the )?(?P<s>{named}) (?:of )?(?P<w>last year)", _last_named),
        (rf"{prep}(?P<a>{FULL_POINT})", _full),
        (rf"{required}(?:the |l'|le |la |el )?(?P<a>{MONTH}|{HOLIDAY})", _full),
    ]
    bound = r"(?<![^ ])(?:{})(?![^ ])"
    return [(re.compile(bound.format(pattern)), handler) for pattern, handler in table]


RULES: list[Rule] = _rules()
