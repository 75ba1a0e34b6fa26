"""The one query specification: the command line, the HTTP API, the MCP tools and `Library.query` accept the
same fields with the same defaults and limits, and refuse the same values with the same message.

Each front end is introspected (click's parameters, the live OpenAPI document, the MCP tools' input
schemas, the Python signature) and driven just past each limit; the expected names and limits are the
specification's own, never a second list written here.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

import mediasearch as ms
from mediasearch import queryspec
from mediasearch.queryspec import QueryField
from mediasearch.settings import load_settings

TOKEN = "a-token-long-enough-for-the-daemon"
LOCAL = "http://127.0.0.1"  # the daemon answers loopback hosts only
FRONT_END_ONLY = {"cli": {"paths_only", "as_json", "ctx"}, "http": {"terms", "model"}}


def _spec(command: str) -> tuple[QueryField, ...]:
    return queryspec.QUERY_FIELDS if command == "query" else queryspec.SIMILAR_FIELDS


def _bad_values(field: QueryField) -> Iterator[tuple[Any, Any]]:
    """(a value just past a limit, the last value within it) for each limit of ``field``."""
    if field.minimum is not None:
        below = field.minimum - 1 if field.kind == queryspec.INT else field.minimum - 0.5
        yield below, field.minimum
    if field.maximum is not None:
        above = field.maximum + 1 if field.kind == queryspec.INT else field.maximum + 0.5
        yield above, field.maximum
    if field.choices:
        yield "neither", field.choices[-1]
    if field.max_items is not None:
        item = __file__ if field.kind == queryspec.PATH else "x"  # a file that exists, for image fields
        yield [item] * (field.max_items + 1), [item] * field.max_items


def _limited(command: str) -> list[tuple[QueryField, Any, Any]]:
    return [(f, bad, good) for f in _spec(command) for bad, good in _bad_values(f)]


def _message(field: QueryField, value: Any, name: str) -> str:
    with pytest.raises(queryspec.SpecError) as caught:
        field.check(tuple(value) if isinstance(value, list) else value)
    return caught.value.named(name)


# -- the names and defaults ------------------------------------------------------------------------


def _click_command(name: str) -> Any:
    from typer.main import get_command

    from mediasearch.cli import app

    return get_command(app).commands[name]  # type: ignore[attr-defined]


def _openapi_body(name: str) -> dict[str, Any]:
    from fastapi.testclient import TestClient

    from mediasearch.serve.api import create_app

    spec = TestClient(create_app(_Stub(), TOKEN), base_url=LOCAL).get("/openapi.json").json()
    return dict(spec["components"]["schemas"][name])


def _mcp_schemas(tmp_path: Path) -> dict[str, dict[str, Any]]:
    pytest.importorskip("mcp", reason="the test extra installs the MCP SDK")
    from mediasearch.serve.mcp import build_server

    server = build_server(load_settings({"home": str(tmp_path / "home"), "model": "demo"}))
    tools = anyio.run(server.list_tools)
    return {t.name: getattr(t, "input_schema", None) or t.inputSchema for t in tools}


@pytest.mark.parametrize("command", ["query", "similar"])
def test_every_front_end_takes_the_specification_s_fields(command: str, tmp_path: Path) -> None:
    names = {f.name for f in _spec(command)}
    cli = {p.name for p in _click_command(command).params} - FRONT_END_ONLY["cli"]
    assert cli == names | ({"file"} if command == "similar" else set())
    body = _openapi_body("QueryRequest" if command == "query" else "SimilarRequest")
    http = set(body["properties"]) - FRONT_END_ONLY["http"]
    assert http == names | ({"path"} if command == "similar" else set())
    tool = _mcp_schemas(tmp_path)["search" if command == "query" else "similar"]
    assert set(tool["properties"]) == names | ({"path"} if command == "similar" else set())
    method = ms.Library.query if command == "query" else ms.Library.similar
    python = {n for n, p in inspect.signature(method).parameters.items() if p.kind is p.KEYWORD_ONLY}
    assert python | ({"text"} if command == "query" else set()) == names


@pytest.mark.parametrize("command", ["query", "similar"])
def test_every_front_end_has_the_specification_s_defaults(command: str, tmp_path: Path) -> None:
    params = {p.name: p for p in _click_command(command).params}
    body = _openapi_body("QueryRequest" if command == "query" else "SimilarRequest")["properties"]
    tool = _mcp_schemas(tmp_path)["search" if command == "query" else "similar"]["properties"]
    method = ms.Library.query if command == "query" else ms.Library.similar
    python = inspect.signature(method).parameters
    for field in _spec(command):
        empty = [] if field.repeatable else (None if field.kind != queryspec.BOOL else False)
        want = field.default if field.default not in (None, ()) else empty
        assert (params[field.name].default or empty) == want, field.name
        assert params[field.name].multiple == field.repeatable or field.name == "text", field.name
        assert body[field.name].get("default", empty) == want, field.name
        assert tool[field.name].get("default", empty) == want, field.name
        if field.name != "text":
            assert (python[field.name].default or empty) == want, field.name


def _schema_limits(prop: dict[str, Any]) -> dict[str, Any]:
    """A property's limits, with the null of an optional left out."""
    arms = [a for a in prop.get("anyOf", [prop]) if a.get("type") != "null"]
    one = arms[0] if len(arms) == 1 else prop
    items = one.get("items", {})
    return {
        "minimum": one.get("minimum"),
        "maximum": one.get("maximum"),
        "max_items": one.get("maxItems"),
        "max_length": items.get("maxLength", one.get("maxLength")),
        "choices": tuple(one.get("enum", ())),
    }


def _spec_limits(field: QueryField) -> dict[str, Any]:
    return {
        "minimum": field.minimum,
        "maximum": field.maximum,
        "max_items": field.max_items,
        "max_length": field.max_length,
        "choices": field.choices,
    }


@pytest.mark.parametrize("command", ["query", "similar"])
def test_the_http_and_mcp_schemas_declare_the_specification_s_limits(command: str, tmp_path: Path) -> None:
    body = _openapi_body("QueryRequest" if command == "query" else "SimilarRequest")["properties"]
    tool = _mcp_schemas(tmp_path)["search" if command == "query" else "similar"]["properties"]
    for field in _spec(command):
        if field.kind in (queryspec.DATE, queryspec.NEAR, queryspec.BOOL):
            continue  # their shapes are checked by the refusals below and by the contract tests
        assert _schema_limits(body[field.name]) == _spec_limits(field), field.name
        assert _schema_limits(tool[field.name]) == _spec_limits(field), field.name


# -- the refusals and their messages ---------------------------------------------------------------


def _cli_args(field: QueryField, value: Any) -> list[str]:
    values = value if isinstance(value, list) else [value]
    return [a for v in values for a in (field.cli_flag, str(v))]


@pytest.mark.parametrize(("field", "bad", "good"), _limited("query"), ids=lambda v: getattr(v, "name", None))
def test_the_command_line_refuses_past_each_limit_with_the_specification_s_message(
    field: QueryField, bad: Any, good: Any, tmp_path: Path
) -> None:
    from mediasearch.cli import app

    base = ["--home", str(tmp_path / "home"), "--model", "demo", "query", "a red circle"]
    refused = CliRunner().invoke(app, [*base, *_cli_args(field, bad)])
    assert refused.exit_code == 2, refused.output
    assert _message(field, bad, field.cli_flag) in " ".join(refused.output.replace("│", " ").split())
    taken = CliRunner().invoke(app, [*base, *_cli_args(field, good)])
    assert taken.exit_code != 2, taken.output  # past the checks: the empty home answers for itself


class _Stub:
    """A daemon that answers every query with nothing (the HTTP layer is what is under test)."""

    state, message = "ready", ""

    def __init__(self) -> None:
        self.queries: list[Any] = []

    def query(self, query: Any, model: str | None = None) -> list[dict[str, Any]]:
        self.queries.append(query)
        return []

    def similar(self, path: str, query: Any, model: str | None = None) -> list[dict[str, Any]]:
        self.queries.append(query)
        return []

    def explain(self, query: Any, model: str | None = None) -> dict[str, Any]:
        return {"text": query.terms[0].value}

    def indexed_path(self, path: str) -> str:
        return path


@pytest.fixture(scope="module")
def http() -> Any:
    from fastapi.testclient import TestClient

    from mediasearch.serve.api import create_app

    stub = _Stub()
    client = TestClient(create_app(stub, TOKEN), base_url=LOCAL, headers={"X-Mediasearch-Token": TOKEN})
    client.stub = stub  # type: ignore[attr-defined]
    return client


@pytest.mark.parametrize(("field", "bad", "good"), _limited("query"), ids=lambda v: getattr(v, "name", None))
def test_the_http_api_refuses_past_each_limit(field: QueryField, bad: Any, good: Any, http: Any) -> None:
    refused = http.post("/query", json={"text": "a red circle", field.name: bad})
    assert refused.status_code == 422, refused.text
    if not field.choices and field.max_items is None:  # pydantic words enums and list lengths itself
        assert _message(field, bad, field.name) in refused.json()["error"]
    square = [{"value": "a square"}]  # a term that weighs: a negative text weight alone is no query
    taken = http.post("/query", json={"text": "a red circle", "terms": square, field.name: good})
    assert taken.status_code == 200, taken.text


@pytest.mark.parametrize(("field", "bad", "good"), _limited("query"), ids=lambda v: getattr(v, "name", None))
def test_the_mcp_search_tool_refuses_past_each_limit(field: QueryField, bad: Any, good: Any, tmp_path: Path) -> None:
    pytest.importorskip("mcp", reason="the test extra installs the MCP SDK")
    from mediasearch.serve.mcp import build_server

    server = build_server(load_settings({"home": str(tmp_path / "home"), "model": "demo"}))

    async def call() -> Any:
        return await server.call_tool("search", {"text": "a red circle", field.name: bad})

    with pytest.raises(Exception) as caught:
        anyio.run(call)
    if not field.choices and field.max_items is None:
        assert _message(field, bad, field.name) in str(caught.value)


@pytest.mark.parametrize(("field", "bad", "good"), _limited("query"), ids=lambda v: getattr(v, "name", None))
def test_library_query_refuses_past_each_limit(field: QueryField, bad: Any, good: Any, tmp_path: Path) -> None:
    with ms.Library.open(home=tmp_path / "home", model="demo") as lib, pytest.raises(queryspec.SpecError) as caught:
        lib.query("a red circle", **{field.name: bad})
    assert str(caught.value) == _message(field, bad, field.name)


# -- what each front end sends down ----------------------------------------------------------------


def test_the_http_body_becomes_the_query_library_query_builds(http: Any, tmp_path: Path) -> None:
    """The same values through HTTP and through `query_of` (what `Library.query` calls) give the same Query."""
    from mediasearch.library.requests import query_of

    values = {
        "text": "Café sign", "negatives": ["2:a dog"], "limit": 7, "kind": "image", "folder": str(tmp_path),
        "tags": ["red"], "after": "2023-05", "before": "2024", "near": "43.7,7.27,25", "camera": "canon",
        "place": "Nice", "person": ["Alice", "Bob"], "ocr": ["CAFÉ de Flore"], "sort": "date", "min_score": 0.25,
    }
    body = {**values, "near": {"lat": 43.7, "lon": 7.27, "km": 25}}
    assert http.post("/query", json=body).status_code == 200
    sent = http.stub.queries[-1]
    assert sent == query_of({k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    assert sent.ocr == ("cafe", "de", "flore") and sent.place == "nice" and sent.people == ("Alice", "Bob")
    filt = sent.filter()
    assert (filt.ocr, filt.place, filt.camera) == (("cafe", "de", "flore"), "nice", "canon")


def test_explain_answers_the_parse_without_searching(http: Any, tmp_path: Path) -> None:
    answer = http.post("/query", json={"text": "a red circle", "explain": True})
    assert answer.status_code == 200 and answer.json()["text"] == "a red circle"
    with ms.Library.open(home=tmp_path / "home", model="demo") as lib:
        parsed = lib.query("a red circle", explain=True, kind="video", ocr=["Sortie"], literal=True)
    assert (parsed.text, parsed.kind, parsed.ocr, parsed.after) == ("a red circle", "video", ["sortie"], None)


def test_the_one_line_parse_fills_what_the_options_leave_and_the_options_win(tmp_path: Path) -> None:
    with ms.Library.open(home=tmp_path / "home", model="demo") as lib:
        read = lib.query("a red circle in Paris in 2023", explain=True)
        assert (read.text, read.after, read.before) == ("a red circle", "2023-01-01", "2024-01-01")
        assert read.place is not None and read.place.name == "Paris" and read.place.km > 0
        mine = lib.query("a red circle in Paris in 2023", explain=True, after="2020-05", near="1,2,3", sort="date")
        assert (mine.after, mine.before, mine.place, mine.sort) == ("2020-05-01", "2024-01-01", None, "date")
        literal = lib.query("a red circle in Paris in 2023", explain=True, literal=True)
        assert (literal.text, literal.after, literal.place) == ("a red circle in Paris in 2023", None, None)


def test_an_unknown_person_is_one_clear_line(tmp_path: Path, cli: Any) -> None:
    import numpy as np

    from mediasearch.lab.shapes import render

    folder = tmp_path / "lib"
    folder.mkdir()
    render("red", "circle", rng=np.random.default_rng(1)).save(folder / "red.png")
    cli("index", str(folder))
    refused = cli("query", "a red circle", "--person", "Zoë", ok=False)
    assert refused.exit_code == 1 and "nobody called 'Zoë'" in refused.stderr, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    hits = json.loads(cli("query", "a red circle", "--json").stdout)
    assert hits[0]["text"] is None and hits[0]["people"] == []


# -- the text normaliser the OCR signal shares -----------------------------------------------------


@given(st.text(max_size=40))
def test_normalised_words_are_folded_and_normalising_again_changes_nothing(text: str) -> None:
    from mediasearch import textnorm

    words = textnorm.words(text)
    assert all(w and w == textnorm.fold(w) and " " not in w for w in words)
    assert textnorm.words(textnorm.normalise(text)) == words


def test_accents_and_case_fold_away() -> None:
    from mediasearch import textnorm

    assert textnorm.words("Café-Bar  ÉTÉ 24") == ("cafe", "bar", "ete", "24")
