"""The daemon boundary's JSON mapping: every result dataclass goes to JSON and back unchanged, and an answer
of the wrong shape is one clear error naming where it is wrong."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mediasearch.library import people, text
from mediasearch.library import types as results
from mediasearch.library.wire import WireError, from_json, to_json

# Every dataclass a Library method returns (and so the daemon sends): the result types, people, text.
RESULT_TYPES = [
    getattr(module, name)
    for module in (results, people, text)
    for name in dir(module)
    if dataclasses.is_dataclass(getattr(module, name)) and getattr(module, name).__module__ == module.__name__
] + [results.Hit, results.IndexReport]
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


def strategy(hint: Any) -> st.SearchStrategy[Any]:
    """Values of a type hint (the hints the result dataclasses use)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return JSON
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*(strategy(a) for a in args))
    if dataclasses.is_dataclass(hint):
        hints = typing.get_type_hints(hint)
        return st.builds(hint, **{f.name: strategy(hints[f.name]) for f in dataclasses.fields(hint)})
    if origin is list:
        return st.lists(strategy(args[0]), max_size=3)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return st.lists(strategy(args[0]), max_size=3).map(tuple)
        return st.tuples(*(strategy(a) for a in args))
    if origin is dict:
        return st.dictionaries(st.text(max_size=5), strategy(args[1]), max_size=3)
    simple: dict[Any, st.SearchStrategy[Any]] = {
        int: st.integers(-(2**53), 2**53),
        float: st.floats(allow_nan=False, allow_infinity=False),
        str: st.text(max_size=10),
        bool: st.booleans(),
        type(None): st.none(),
    }
    return simple[hint]


def test_every_result_type_is_covered() -> None:
    names = {cls.__name__ for cls in RESULT_TYPES}
    wanted = {"Hit", "IndexReport", "Status", "TagReport", "DuplicateGroup", "Explanation", "Classification",
              "Person", "FileText", "PlaceCount"}
    assert wanted <= names


@pytest.mark.parametrize("cls", RESULT_TYPES, ids=lambda c: c.__name__)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_results_go_to_json_and_back_unchanged(cls: type, data: st.DataObject) -> None:
    value = data.draw(strategy(cls))
    wire = json.loads(json.dumps(to_json(value)))  # what crosses the socket
    assert from_json(cls, wire) == value


def test_a_newer_daemon_s_extra_keys_are_ignored_and_missing_ones_take_defaults() -> None:
    hit = from_json(results.Hit, {"path": "/a.jpg", "score": 1, "kind": "image", "calibrated": 0.5, "new": [1]})
    assert hit == results.Hit("/a.jpg", 1.0, "image", 0.5)
    assert isinstance(hit.score, float) and hit.people == [] and hit.text is None


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"path": "/a.jpg", "score": "high", "kind": "image", "calibrated": 0.5}, "Hit.score"),
        ({"path": "/a.jpg", "kind": "image", "calibrated": 0.5}, "score is missing"),
        ({"path": "/a.jpg", "score": 1.0, "kind": "image", "calibrated": 0.5, "tags": ["a", 3]}, "Hit.tags[1]"),
        ([], "expected an object"),
    ],
)
def test_a_wrong_shape_names_where(data: Any, where: str) -> None:
    with pytest.raises(WireError, match=where.replace("[", r"\[").replace("]", r"\]")):
        from_json(results.Hit, data)
