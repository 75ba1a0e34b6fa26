"""The daemon's HTTP API (FastAPI): query, similar, status, index, forget, tag, tags, thumbnails.

Every route but ``/health``, the OpenAPI spec (``/openapi.json``, ``/docs``) and the search page
needs the daemon's token (header ``X-Mediasearch-Token``, ``Authorization: Bearer``, or ``?token=``).
JSON bodies and answers are the CLI's ``--json`` documents. FastAPI is imported inside `create_app`,
and this module deliberately has no ``from __future__ import annotations``: FastAPI reads the
route signatures, whose models are defined next to the routes.
"""

import os
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol

from mediasearch import __version__
from mediasearch.client import TOKEN_HEADER
from mediasearch.errors import (
    ConfigError,
    MediaError,
    MediaSearchError,
    ModelMismatchError,
    QueryError,
    StoreError,
)

if TYPE_CHECKING:
    from mediasearch.indexer import IndexOptions
    from mediasearch.search import Query

_STATUS_CODES: list[tuple[type[MediaSearchError], int]] = [
    (QueryError, 400),
    (ConfigError, 400),
    (MediaError, 422),
    (ModelMismatchError, 409),
    (StoreError, 503),
]


class ServiceLike(Protocol):
    """What the API needs from the daemon (`daemon.Service`); tests may hand in a stub."""

    state: str
    message: str

    def query(self, query: "Query", model: str | None = None) -> list[dict[str, Any]]: ...

    def similar(self, path: str, query: "Query", model: str | None = None) -> list[dict[str, Any]]: ...

    def status(self) -> dict[str, Any]: ...

    def index(
        self,
        paths: list[str],
        options: "IndexOptions",
        *,
        tagging: bool | None = None,
        watch: bool = False,
        model: str | None = None,
    ) -> dict[str, Any]: ...

    def forget(self, path: str) -> dict[str, Any]: ...

    def tag(self, vocab: str | None) -> dict[str, Any]: ...

    def tags(self) -> dict[str, int]: ...

    def thumbnail(self, path: str, size: int) -> bytes: ...


def status_code(exc: MediaSearchError) -> int:
    """The HTTP status for a domain error (404 not indexed, 503 not ready, 400 bad query, ...)."""
    name = type(exc).__name__
    if name == "NotIndexedError":
        return 404
    if name == "NotReadyError":
        return 503
    for kind, code in _STATUS_CODES:
        if isinstance(exc, kind):
            return code
    return 500


def create_app(service: ServiceLike, token: str, *, instance: Callable[[], dict[str, Any]] | None = None) -> Any:
    """The FastAPI app over ``service``; ``token`` guards everything but health, docs and the page."""
    from fastapi import Depends, FastAPI, Request
    from fastapi.responses import JSONResponse

    app = FastAPI(
        title="mediasearch",
        version=__version__,
        description="Semantic search over photo and video folders (the mediasearch daemon).",
    )

    @app.exception_handler(MediaSearchError)
    def domain_error(request: Request, exc: MediaSearchError) -> JSONResponse:
        return JSONResponse({"error": str(exc), "kind": type(exc).__name__}, status_code=status_code(exc))

    @app.get("/health", tags=["daemon"])
    def health() -> dict[str, Any]:
        """Liveness (no token): the state, and the instance id the port file names."""
        return {"ok": True, "state": service.state, "message": service.message, **(instance() if instance else {})}

    guarded = [Depends(_token_check(token))]
    _search_routes(app, service, guarded)
    _index_routes(app, service, guarded)
    _file_routes(app, service, guarded)
    return app


def _token_check(token: str) -> Callable[..., None]:
    from fastapi import HTTPException, Security
    from fastapi.security import APIKeyHeader, APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer

    header = APIKeyHeader(name=TOKEN_HEADER, auto_error=False)
    query = APIKeyQuery(name="token", auto_error=False)
    bearer = HTTPBearer(auto_error=False)
    expected = token.encode("utf-8")

    def check(
        from_header: Annotated[str | None, Security(header)],
        from_query: Annotated[str | None, Security(query)],
        from_bearer: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    ) -> None:
        given = from_header or (from_bearer.credentials if from_bearer else None) or from_query
        if not given or not secrets.compare_digest(given.encode("utf-8"), expected):
            raise HTTPException(401, f"a valid token is required (header {TOKEN_HEADER}, Bearer, or ?token=)")

    return check


def _when(value: float | str | None) -> float | None:
    from mediasearch.search import parse_date

    return parse_date(value) if isinstance(value, str) else value


def _to_query(body: Any) -> "Query":
    """A validated ``POST /query`` body as a search Query (``text`` first, then ``terms``)."""
    from mediasearch.search import Query, Term

    terms = [Term("text", body.text)] if body.text else []
    terms += [Term(t.kind, t.value, t.weight) for t in body.terms]
    return Query(
        terms=tuple(terms),
        raw=body.raw,
        limit=body.limit,
        kind=body.kind,
        path_prefix=os.path.abspath(body.path_prefix) if body.path_prefix else None,
        tags=tuple(body.tags),
        after=_when(body.after),
        before=_when(body.before),
        min_score=body.min_score,
        sort=body.sort,
    )


def _search_routes(app: Any, service: ServiceLike, guarded: list[Any]) -> None:
    from pydantic import BaseModel, Field

    from mediasearch.search import Query

    class TermIn(BaseModel):
        kind: Literal["text", "image"] = "text"
        value: str
        weight: float = 1.0

    class QueryIn(BaseModel):
        """`mediasearch query` as JSON; ``text`` is a shorthand for one text term."""

        text: str | None = None
        terms: list[TermIn] = Field(default_factory=list)
        raw: bool = False
        limit: int = Field(10, ge=1, le=10000)
        kind: Literal["image", "video"] | None = None
        path_prefix: str | None = None
        tags: list[str] = Field(default_factory=list)
        after: float | str | None = Field(default=None, description="unix time, or YYYY[-MM[-DD]]")
        before: float | str | None = Field(default=None, description="unix time, or YYYY[-MM[-DD]]")
        min_score: float | None = None
        sort: Literal["score", "date"] = "score"
        model: str | None = Field(default=None, description="refuse unless the daemon answers with this model")

    class SimilarIn(BaseModel):
        path: str
        limit: int = Field(10, ge=1, le=10000)
        kind: Literal["image", "video"] | None = None
        model: str | None = None

    class HitOut(BaseModel):
        path: str
        score: float
        calibrated: float
        kind: str
        timestamp: float | None
        start: float | None
        end: float | None
        tags: list[str]

    @app.post("/query", dependencies=guarded, response_model=list[HitOut], tags=["search"])
    def query(body: QueryIn) -> list[dict[str, Any]]:
        """Nearest items to texts and example images (negative weights subtract), best first."""
        return service.query(_to_query(body), body.model)

    @app.get("/query", dependencies=guarded, response_model=list[HitOut], tags=["search"])
    def query_get(q: str, limit: int = 10, kind: Literal["image", "video"] | None = None) -> list[dict[str, Any]]:
        """The same for a plain text (the search page uses it)."""
        return service.query(_to_query(QueryIn(text=q, limit=limit, kind=kind)))

    @app.post("/similar", dependencies=guarded, response_model=list[HitOut], tags=["search"])
    def similar(body: SimilarIn) -> list[dict[str, Any]]:
        """Items that look like a file (indexed or not)."""
        return service.similar(body.path, Query(limit=body.limit, kind=body.kind), body.model)


def _index_routes(app: Any, service: ServiceLike, guarded: list[Any]) -> None:
    from pydantic import BaseModel, Field

    from mediasearch.indexer import IndexOptions

    class IndexIn(BaseModel):
        """`mediasearch index` as JSON; ``watch`` also adds the paths to the watched roots."""

        paths: list[str] = Field(min_length=1)
        frame_interval: float = Field(2.0, gt=0)
        max_frames: int = Field(600, ge=1)
        batch_size: int = Field(32, ge=1)
        workers: int = Field(0, ge=0)
        include_hidden: bool = False
        tag: bool | None = None
        watch: bool = False
        model: str | None = None

    class PathIn(BaseModel):
        path: str

    class TagIn(BaseModel):
        vocab: str | None = Field(default=None, description="a vocabulary file on the daemon's machine")

    @app.get("/status", dependencies=guarded, tags=["daemon"])
    def status() -> dict[str, Any]:
        """`status --json`, plus a ``daemon`` section (roots, watching mode, busy, last rescan)."""
        return service.status()

    @app.post("/index", dependencies=guarded, tags=["index"])
    def index(body: IndexIn) -> dict[str, Any]:
        """Bring the index in step with folders (or files); answers `index --json` when done."""
        options = IndexOptions(body.frame_interval, body.max_frames, body.batch_size, body.workers, body.include_hidden)
        return service.index(body.paths, options, tagging=body.tag, watch=body.watch, model=body.model)

    @app.post("/forget", dependencies=guarded, tags=["index"])
    def forget(body: PathIn) -> dict[str, Any]:
        """Drop a folder (or file) from the index, and stop watching roots under it."""
        return service.forget(body.path)

    @app.post("/tag", dependencies=guarded, tags=["index"])
    def tag(body: TagIn) -> dict[str, Any]:
        """Zero-shot tags for everything indexed (built-in vocabulary unless ``vocab``)."""
        return service.tag(body.vocab)

    @app.get("/tags", dependencies=guarded, tags=["search"])
    def tags() -> dict[str, int]:
        """The tags in the index, with how many files carry each."""
        return service.tags()


def _file_routes(app: Any, service: ServiceLike, guarded: list[Any]) -> None:
    from fastapi import Query as Param
    from fastapi.responses import HTMLResponse, Response

    @app.get("/thumbnail", dependencies=guarded, tags=["search"], response_class=Response)
    def thumbnail(path: str, size: Annotated[int, Param(ge=16, le=1024)] = 256) -> Response:
        """A JPEG of an indexed file (404 for any path that is not in the index)."""
        data = service.thumbnail(path, size)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=300"})

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return SEARCH_PAGE


SEARCH_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>mediasearch</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.5em;background:#fafafa}
form{margin-bottom:1em} input[type=text]{width:28em;padding:.4em}
#hits{display:flex;flex-wrap:wrap;gap:10px}
figure{margin:0;width:180px;font-size:12px;overflow-wrap:anywhere}
img{width:180px;height:180px;object-fit:contain;background:#eee}
#msg{color:#a00}
</style></head><body>
<form id="f"><input type="text" id="q" placeholder="a red circle" autofocus>
<button>search</button> <span id="msg"></span></form>
<div id="hits"></div>
<script>
const token = new URLSearchParams(location.search).get("token") || localStorage.getItem("mstoken") || "";
if (token) localStorage.setItem("mstoken", token);
const enc = encodeURIComponent;
document.getElementById("f").onsubmit = async (e) => {
  e.preventDefault();
  const msg = document.getElementById("msg"), box = document.getElementById("hits");
  msg.textContent = ""; box.innerHTML = "";
  const r = await fetch("query?limit=48&q=" + enc(document.getElementById("q").value),
                        {headers: {"X-Mediasearch-Token": token}});
  const data = await r.json();
  if (!r.ok) { msg.textContent = data.error || data.detail || r.status; return; }
  for (const h of data) {
    const fig = document.createElement("figure"), img = document.createElement("img");
    img.src = "thumbnail?size=256&path=" + enc(h.path) + "&token=" + enc(token);
    const cap = document.createElement("figcaption");
    cap.textContent = h.path + (h.timestamp !== null ? " @ " + h.timestamp + " s" : "") + " " + h.score.toFixed(3);
    fig.append(img, cap); box.append(fig);
  }
};
</script></body></html>
"""
