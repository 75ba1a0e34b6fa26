"""`mediasearch mcp`: the library as a Model Context Protocol server over stdio, for assistants.

Tools: ``search`` (the fields of the one query specification, ``queryspec.py``: text and/or
example images, negatives, filters, a calibrated cut-off), ``similar`` (its filters),
``status`` and ``tags``; with ``--allow-index`` also ``index`` and ``forget`` (read-only otherwise).
Each hit names a thumbnail resource, ``mediasearch://thumbnail/{key}``: the key is opaque and known
only for files a search of this session returned, so an assistant can read no other file through it.

Every call goes through `mediasearch.Library.open`, so it is forwarded to the daemon when one serves
the home (fast: the model is warm there); otherwise the call opens the store itself and lets go of it
when done, so the server never holds the store between calls. The SDK (`mcp`, the optional extra) is
imported when the server starts. No ``from __future__ import annotations``: the SDK reads the tools'
signatures to build their input schemas.
"""

import dataclasses
import functools
import hashlib
import importlib
import inspect
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import Field

from mediasearch import queryspec
from mediasearch.errors import ConfigError, MediaSearchError, QueryError, redact
from mediasearch.library import roots
from mediasearch.queryspec import QueryField
from mediasearch.settings import Settings

THUMBNAIL_URI = "mediasearch://thumbnail/{key}"
THUMBNAIL_SIZE = 384
INSTRUCTIONS = (
    "Searches the user's own photos and videos by what they show (CLIP embeddings). Use `search` with a "
    "short description ('a red circle', 'dog on a beach'), or an example image file; `similar` for items "
    "that look like a file; `tags` for what the library holds. Scores: `calibrated` is 0..1. Each hit "
    "names a thumbnail resource you can read to see it."
)


def _about(text: str) -> Any:
    """A parameter's description, for the tool's input schema."""
    return Field(description=text)


def _server_class() -> Any:
    """The SDK's high-level server: ``MCPServer`` (mcp 2), else ``FastMCP`` (mcp 1)."""
    try:
        from mcp.server.mcpserver import MCPServer

        return MCPServer
    except ImportError:
        pass
    try:
        fastmcp = importlib.import_module("mcp.server.fastmcp")
    except ImportError:
        raise ConfigError("`mediasearch mcp` needs the MCP SDK: pip install 'mediasearch[mcp]'") from None
    return fastmcp.FastMCP


class Tools:
    """What the server's tools do: each opens the library (the daemon's, when one runs) for one call."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.seen: dict[str, tuple[str, str, float | None]] = {}  # thumbnail key -> (path, kind, timestamp)

    def _library(self) -> Any:
        from mediasearch.library import Library

        return Library.open(settings=self.settings)

    def _hits(self, hits: list[Any]) -> list[dict[str, Any]]:
        """Hits as ``query --json`` rows, each with its thumbnail's URI (remembered for this session)."""
        rows = []
        for hit in hits:
            key = hashlib.sha256(f"{hit.path}\0{hit.timestamp}".encode("utf-8", "surrogateescape")).hexdigest()[:24]
            self.seen[key] = (hit.path, hit.kind, hit.timestamp)
            rows.append({**dataclasses.asdict(hit), "thumbnail": THUMBNAIL_URI.format(key=key)})
        return rows

    def search(self, **fields: Any) -> list[dict[str, Any]] | dict[str, Any]:
        """Photos and video moments by what they show: a text, example images, or both; best first.

        A video appears once, with its best moment (``timestamp``) and the span that matches (``start``,
        ``end``, seconds). ``calibrated`` is a 0..1 score; ``thumbnail`` a resource to look at the item.
        Dates, a place and people named in ``text`` are read out of it (``literal`` turns that off);
        ``explain`` answers how the text was read instead of searching.
        """
        from mediasearch.library.wire import to_json

        values = spec_values(fields, queryspec.QUERY_FIELDS)
        if not values["text"] and not values["image"]:
            raise QueryError("give a text, an image, or both")
        with self._library() as lib:
            found = lib.query(**values)
        return dict(to_json(found)) if values["explain"] else self._hits(found)

    def similar(self, path: str, **fields: Any) -> list[dict[str, Any]]:
        """Items that look like a file, best first (the file itself excluded when it is indexed), with the
        filters of ``search``."""
        with self._library() as lib:
            return self._hits(lib.similar(path, **spec_values(fields, queryspec.SIMILAR_FIELDS)))

    def status(self) -> dict[str, Any]:
        """What is indexed (files, images, videos, frames), by which model, where, and the last run."""
        with self._library() as lib:
            return dataclasses.asdict(lib.status())

    def tags(self) -> dict[str, int]:
        """The tags in the library, with how many files carry each (empty until `mediasearch tag` has run)."""
        with self._library() as lib:
            return dict(lib.tags())

    def people(self) -> list[dict[str, Any]]:
        """The people found by their faces, largest first: id, name (null until named), faces, files, the
        clearest face (cover). Search with ``person`` set to a name or an id to find their photos."""
        with self._library() as lib:
            return [dataclasses.asdict(p) for p in lib.people()]

    def text(
        self, path: Annotated[str, _about("a picture or video (absolute path; indexed, or any on this machine)")]
    ) -> dict[str, Any]:
        """What is written in a picture, or in a video's frames: lines with confidence, box and time (OCR)."""
        with self._library() as lib:
            return lib.text(path).to_json()

    def index(self, paths: Annotated[list[str], _about("folders or files to index (absolute)")]) -> dict[str, Any]:
        """Index folders (or files) under the library's roots: add new ones, update changed ones, drop
        deleted ones. Can take a while."""
        allowed = roots.recorded(self.settings.home)
        checked = [roots.checked(p, allowed) for p in paths]
        with self._library() as lib:
            return dataclasses.asdict(lib.index(checked))

    def forget(self, path: Annotated[str, _about("a folder or file to drop (absolute)")]) -> dict[str, Any]:
        """Drop a folder (or file) under the library's roots, and everything under it, from the index
        (the files themselves stay)."""
        path = roots.checked(path, roots.recorded(self.settings.home))
        with self._library() as lib:
            return {"path": path, "files": lib.forget(path)}

    def thumbnail(self, key: str) -> bytes:
        """A JPEG of an item a search of this session returned (a video's best moment)."""
        from mediasearch.media.thumbnails import make_thumbnail

        if key not in self.seen:
            raise QueryError("unknown thumbnail: search first, then read the thumbnail a hit names")
        path, kind, timestamp = self.seen[key]
        return make_thumbnail(path, kind, THUMBNAIL_SIZE, at=timestamp)


def spec_values(fields: dict[str, Any], spec: tuple[QueryField, ...]) -> dict[str, Any]:
    """A tool call's arguments as the query specification's values (lists as tuples, ``near`` as a tuple)."""
    values = {f.name: fields.get(f.name, f.default) for f in spec}
    near = values.get("near")
    if near is not None and not isinstance(near, str | tuple):
        values["near"] = (near.lat, near.lon, near.km)
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def _with_spec(method: Any, spec: tuple[QueryField, ...], first: list[inspect.Parameter]) -> Any:
    """``method`` with a signature of the specification's fields, which the SDK turns into the tool's schema."""
    from mediasearch.serve.schemas import query_fields

    @functools.wraps(method)
    def tool(**fields: Any) -> Any:
        return method(**fields)

    made = query_fields(spec)
    params = first + [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=ann, default=info)
        for name, (ann, info) in made.items()
    ]
    tool.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        params, return_annotation=inspect.signature(method).return_annotation
    )
    del tool.__wrapped__  # the SDK must read this signature, not the method's
    return tool


def tool_function(tools: Tools, name: str) -> Any:
    """The callable the server registers as the tool ``name`` (search and similar: made from the spec)."""
    method = getattr(tools, name)
    if name == "search":
        return _with_spec(method, queryspec.QUERY_FIELDS, [])
    if name == "similar":
        about = "a file (indexed, or any image or video on this machine), absolute"
        path = inspect.Parameter(
            "path", inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[str, Field(min_length=1, description=about)]
        )
        return _with_spec(method, queryspec.SIMILAR_FIELDS, [path])
    return method


READ_TOOLS = ("search", "similar", "status", "tags", "text", "people")
WRITE_TOOLS = ("index", "forget")


def _tool_error_class() -> type[Exception]:
    """The SDK's ``ToolError``: the one exception whose message reaches the assistant."""
    for module in ("mcp.server.mcpserver.exceptions", "mcp.server.fastmcp.exceptions"):
        try:
            found: type[Exception] = importlib.import_module(module).ToolError
            return found
        except (ImportError, AttributeError):
            continue
    return RuntimeError


def _told(fn: Callable[..., Any], tool_error: type[Exception]) -> Callable[..., Any]:
    """``fn`` whose domain errors reach the assistant as their one line (redacted), not as the SDK's bare
    "Error executing tool"; anything else stays a crash, logged by the server."""

    @functools.wraps(fn)
    def told(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MediaSearchError as exc:
            raise tool_error(redact(str(exc))) from None

    return told


def build_server(settings: Settings, *, allow_index: bool = False) -> Any:
    """The MCP server for the home in ``settings``; ``allow_index`` adds the tools that change the index,
    within the home's library roots (`library.roots`)."""
    server = _server_class()("mediasearch", instructions=INSTRUCTIONS)
    tools = Tools(settings)
    tool_error = _tool_error_class()
    for name in READ_TOOLS + (WRITE_TOOLS if allow_index else ()):
        server.tool(name=name)(_told(tool_function(tools, name), tool_error))
    server.resource(THUMBNAIL_URI, name="thumbnail", mime_type="image/jpeg")(tools.thumbnail)
    return server


def run(settings: Settings, *, allow_index: bool = False) -> None:
    """Serve over stdio until the client closes the connection."""
    build_server(settings, allow_index=allow_index).run("stdio")
