"""One translation of a ``Filter`` into Qdrant conditions, for both engines.

``RULES`` is the table: each field of ``Filter``, the payload key it tests and the kind of condition
(exact match, full-text words, a range, a geo radius, excluded ids). An engine adapter
(``edge.EdgeConditions``, ``server.ServerConditions``) only says how each kind is spelled in its own
types, so a new filter field is one row here (plus its payload index, see ``INDEX_KINDS``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from mediasearch.store.base import FLOAT_FIELDS, GEO_FIELDS, KEYWORD_FIELDS, TEXT_FIELDS, Filter, normalize_dir

ConditionKind = Literal["match", "text", "range", "geo", "not_ids"]


@dataclass(frozen=True)
class Rule:
    """``fields`` of a Filter (absent when all are None or empty) tested on payload ``key``.

    ``each``: the field is a tuple and every element must hold (one condition per element).
    """

    fields: tuple[str, ...]
    key: str
    kind: ConditionKind
    each: bool = False
    prepare: Callable[[Any], Any] | None = None


RULES: tuple[Rule, ...] = (
    Rule(("kind",), "kind", "match"),
    Rule(("dir_prefix",), "dirs", "match", prepare=normalize_dir),  # any element of the dirs list
    Rule(("path",), "path", "match"),
    Rule(("root",), "root", "match"),
    Rule(("tags",), "tags", "match", each=True),
    Rule(("people",), "people", "match", each=True),
    Rule(("place",), "places", "match"),
    Rule(("after", "before"), "date", "range"),  # after <= date < before
    Rule(("near",), "geo", "geo"),  # (lat, lon, km)
    Rule(("camera",), "camera", "text"),  # every word, case-insensitive
    Rule(("ocr",), "ocr_text", "text", each=True),
    Rule(("exclude_ids",), "", "not_ids"),
)

# The payload index each kind of condition needs (the store creates one per field of these lists).
INDEX_KINDS: dict[ConditionKind, tuple[str, ...]] = {
    "match": KEYWORD_FIELDS,
    "text": TEXT_FIELDS,
    "range": FLOAT_FIELDS,
    "geo": GEO_FIELDS,
}


class Conditions(Protocol):
    """How one engine spells each kind of condition, and a filter of them."""

    def match(self, key: str, value: str) -> Any: ...
    def text(self, key: str, words: str) -> Any: ...
    def range(self, key: str, gte: float | None, lt: float | None) -> Any: ...
    def geo(self, key: str, lat: float, lon: float, metres: float) -> Any: ...
    def not_ids(self, ids: tuple[str, ...]) -> Any: ...
    def combine(self, must: list[Any], must_not: list[Any]) -> Any: ...


def _absent(value: Any) -> bool:
    return value is None or value == "" or value == ()


def terms(flt: Filter) -> list[tuple[Rule, Any]]:
    """The (rule, value) pairs a filter sets, one per condition; ``each`` rules give one per element."""
    out: list[tuple[Rule, Any]] = []
    for rule in RULES:
        values = tuple(getattr(flt, name) for name in rule.fields)
        if all(_absent(v) for v in values):
            continue
        value = values if len(values) > 1 else values[0]
        for one in value if rule.each else (value,):
            out.append((rule, rule.prepare(one) if rule.prepare else one))
    return out


def _condition(engine: Conditions, rule: Rule, value: Any) -> Any:
    if rule.kind == "match":
        return engine.match(rule.key, value)
    if rule.kind == "text":
        return engine.text(rule.key, value)
    if rule.kind == "range":
        return engine.range(rule.key, *value)
    if rule.kind == "geo":
        lat, lon, km = value
        return engine.geo(rule.key, lat, lon, km * 1000.0)
    return engine.not_ids(tuple(value))


def translate(flt: Filter | None, engine: Conditions) -> Any:
    """The engine's filter for ``flt``; None when it lets everything through."""
    if flt is None:
        return None
    pairs = terms(flt)
    if not pairs:
        return None
    must = [_condition(engine, rule, value) for rule, value in pairs if rule.kind != "not_ids"]
    must_not = [_condition(engine, rule, value) for rule, value in pairs if rule.kind == "not_ids"]
    return engine.combine(must, must_not)
