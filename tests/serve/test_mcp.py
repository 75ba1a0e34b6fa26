"""`mediasearch mcp`: the MCP SDK's own stdio client starts the server, lists its tools, finds the red circles
of a test library first for "a red circle" (through the daemon that serves the home), reads a thumbnail,
and cannot index unless the server was started with --allow-index."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from PIL import Image
from served_library import Served, command, env, served_library

pytest.importorskip("mcp", reason="the test extra installs the MCP SDK (the `mcp` extra)")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with served_library(tmp_path_factory.mktemp("mcp")) as daemon:
        yield daemon


def _structured(result: Any) -> Any:
    """A tool result's JSON (mcp 2 names it ``structured_content``, mcp 1 ``structuredContent``)."""
    assert not getattr(result, "is_error", getattr(result, "isError", False)), result
    data = getattr(result, "structured_content", None) or getattr(result, "structuredContent", None)
    if data is None:
        data = json.loads(result.content[0].text)
    return data["result"] if isinstance(data, dict) and set(data) == {"result"} else data


async def _session(served: Served, cwd: Path, *extra: str, work: Any) -> Any:
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    home_command = command(served.home)
    params = StdioServerParameters(
        command=home_command[0], args=[*home_command[1:], "mcp", *extra], env=env(), cwd=str(cwd)
    )
    with (cwd / "mcp-stderr.txt").open("w") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            return await work(session)


def test_mcp_tools_find_red_circles_first(served: Served, tmp_path: Path) -> None:
    async def work(session: Any) -> dict[str, Any]:
        tools = await session.list_tools()
        hits = _structured(await session.call_tool("search", {"text": "a red circle", "limit": 3}))
        picture = await session.read_resource(hits[0]["thumbnail"])
        status = _structured(await session.call_tool("status", {}))
        similar = _structured(await session.call_tool("similar", {"path": hits[0]["path"], "limit": 2}))
        refused = await session.call_tool("index", {"paths": [str(served.lib)]})
        people = _structured(await session.call_tool("people", {}))
        return {"tools": tools, "hits": hits, "picture": picture, "status": status, "similar": similar,
                "refused": refused, "people": people}

    got = anyio.run(lambda: _session(served, tmp_path, work=work))
    names = {tool.name for tool in got["tools"].tools}
    assert names == {"search", "similar", "status", "tags", "text", "people"}, names  # read-only by default
    search = next(tool for tool in got["tools"].tools if tool.name == "search")
    schema = getattr(search, "input_schema", None) or search.inputSchema
    wanted = {"text", "image", "negatives", "kind", "folder", "tags", "after", "before", "min_score", "near", "camera",
              "sort", "ocr", "person", "place", "literal", "explain"}
    assert wanted <= set(schema["properties"])

    hits = got["hits"]
    assert [Path(h["path"]).name.startswith("red_circle") for h in hits] == [True, True, False], hits
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]

    blob = got["picture"].contents[0]
    image = Image.open(io.BytesIO(base64.b64decode(blob.blob)))
    assert image.format == "JPEG" and max(image.size) <= 384
    assert got["status"]["files"] == 6 and got["status"]["daemon"] is not None  # answered by the daemon
    assert Path(got["similar"][0]["path"]).name.startswith("red_circle")
    assert getattr(got["refused"], "is_error", getattr(got["refused"], "isError", False))  # no such tool
    assert got["people"] == []  # shapes have no faces


def test_mcp_allow_index_adds_the_write_tools_and_no_thumbnail_is_guessable(served: Served, tmp_path: Path) -> None:
    async def work(session: Any) -> Any:
        tools = await session.list_tools()
        try:
            await session.read_resource("mediasearch://thumbnail/0123456789abcdef01234567")
        except Exception as exc:  # the server's refusal (McpError in mcp 1, MCPError in mcp 2)
            return tools, exc
        return tools, None

    tools, refused = anyio.run(lambda: _session(served, tmp_path, "--allow-index", work=work))
    names = {tool.name for tool in tools.tools}
    assert names == {"search", "similar", "status", "tags", "text", "people", "index", "forget"}
    assert refused is not None and "thumbnail" in str(refused)


def test_mcp_text_reads_a_picture_through_the_daemon(served: Served, tmp_path: Path) -> None:
    """The ``text`` tool on a file the daemon has not indexed (it refuses it; the tool reads it itself), and
    ``search`` with recognised-text words (the shapes hold none)."""
    from mediasearch.lab import textpics
    from mediasearch.ocr.text import words

    picture = tmp_path / "sign.png"
    face = next(iter(textpics.fonts()), None)
    textpics.scene(("welcome", "harbour"), font_path=face, size=56, angle=0.0, dark=False, seed=1).save(picture)

    async def work(session: Any) -> Any:
        with_words = await session.call_tool("search", {"text": "a red circle", "ocr": ["starbucks"]})
        without = _structured(await session.call_tool("search", {"text": "a red circle"}))
        got = _structured(await session.call_tool("text", {"path": str(picture)}))
        indexed = _structured(await session.call_tool("text", {"path": without[0]["path"]}))
        return got, _structured(with_words), without, indexed

    got, with_words, without, indexed = anyio.run(lambda: _session(served, tmp_path, work=work))
    assert with_words == [] and without
    # An indexed file: the daemon answers (from the index once its background OCR pass is done).
    assert indexed["path"] == without[0]["path"] and indexed["kind"] == "image" and indexed["lines"] == []
    assert got["path"] == str(picture) and got["kind"] == "image" and got["source"] == "read"
    assert {"welcome", "harbour"} <= {w for line in got["lines"] for w in words(line["text"])}


def _error_text(result: Any) -> str:
    assert getattr(result, "is_error", getattr(result, "isError", False)), result
    return " ".join(getattr(part, "text", "") for part in result.content)


def test_mcp_tool_errors_say_why_and_index_stays_within_the_roots(served: Served, tmp_path: Path) -> None:
    """`--allow-index` let an assistant index /etc and forget /; domain errors read only "Error executing
    tool search"."""
    async def work(session: Any) -> dict[str, Any]:
        return {
            "etc": await session.call_tool("index", {"paths": ["/etc"]}),
            "relative": await session.call_tool("index", {"paths": ["lib"]}),
            "root": await session.call_tool("forget", {"path": "/"}),
            "date": await session.call_tool("search", {"text": "a red circle", "after": "2024-02-30"}),
            "status": await session.call_tool("status", {}),
        }

    got = anyio.run(lambda: _session(served, tmp_path, "--allow-index", work=work))
    for name in ("etc", "root"):
        text = _error_text(got[name])
        assert "outside the library roots" in text and "mediasearch index" in text, text
    assert "absolute" in _error_text(got["relative"])
    date = _error_text(got["date"])
    assert "2024-02-30" in date and date.strip() != "Error executing tool search", date
    assert _structured(got["status"])["files"] == 6  # nothing was indexed or forgotten
