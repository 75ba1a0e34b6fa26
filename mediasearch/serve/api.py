"""The daemon's HTTP API (FastAPI): query, similar, status, index, forget, tag, tags, thumbnails, media.

Every route but ``/health``, the OpenAPI spec (``/openapi.json``, ``/docs``) and the search page
(``/`` and its ``/static/`` files, shipped in ``mediasearch/web``) needs the daemon's token (header
``X-Mediasearch-Token``, ``Authorization: Bearer``, or ``?token=``; pictures and videos the page shows
carry it as ``?token=``, since an ``<img>`` or ``<video>`` cannot send a header).
JSON bodies and answers are the CLI's ``--json`` documents. FastAPI is imported inside `create_app`,
and this module deliberately has no ``from __future__ import annotations``: FastAPI reads the
route signatures, whose models are defined next to the routes.
"""

import base64
import binascii
import contextlib
import functools
import hashlib
import io
import mimetypes
import os
import secrets
import tempfile
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol

from mediasearch import __version__
from mediasearch.errors import (
    ConfigError,
    DataError,
    MediaError,
    MediaSearchError,
    ModelMismatchError,
    QueryError,
    StoreError,
)
from mediasearch.library.client import TOKEN_HEADER

if TYPE_CHECKING:
    from mediasearch.library.requests import IndexOptions, Query

_STATUS_CODES: list[tuple[type[MediaSearchError], int]] = [
    (QueryError, 400),
    (ConfigError, 400),
    (DataError, 400),  # e.g. a file named in the request that is not what it should be
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

    def tag(self, vocab: str | None, prompts: str | None = None) -> dict[str, Any]: ...

    def tags(self) -> dict[str, int]: ...

    def thumbnail(self, path: str, size: int, at: float | None = None) -> bytes: ...

    def media(self, path: str) -> tuple[str, str]: ...

    def duplicates(self, paths: list[str], threshold: float | None = None) -> list[dict[str, Any]]: ...


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
    _organise_routes(app, service, guarded)
    return app


def _organise_routes(app: Any, service: ServiceLike, guarded: list[Any]) -> None:
    """Organising a library: duplicates."""
    from pydantic import BaseModel, Field

    class DuplicatesIn(BaseModel):
        paths: list[str] = Field(default_factory=list, description="folders or files (default: everything)")
        threshold: float | None = Field(default=None, gt=0, le=1, description="pixel similarity, default 0.95")

    @app.post("/duplicates", dependencies=guarded, tags=["search"])
    def duplicates(body: DuplicatesIn) -> list[dict[str, Any]]:
        """`duplicates --json`: groups of exact and near copies, largest first."""
        return service.duplicates([os.path.abspath(p) for p in body.paths], body.threshold)


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
    from mediasearch.library.requests import parse_date

    return parse_date(value) if isinstance(value, str) else value


MAX_UPLOAD_BYTES = 20 << 20
_UPLOAD_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tif"}


def _save_upload(data: str, folder: str, n: int) -> str:
    """An image term's base64 bytes (or data: URL) as a file in ``folder``, for the encoder to read."""
    from PIL import Image, UnidentifiedImageError

    encoded = data.split(",", 1)[1] if data.startswith("data:") else data
    if len(encoded) > MAX_UPLOAD_BYTES * 4 // 3 + 4:
        raise QueryError(f"the image is too large to search by (at most {MAX_UPLOAD_BYTES >> 20} MB)")
    try:
        raw = base64.b64decode(encoded, validate=True)
        with Image.open(io.BytesIO(raw)) as im:
            kind = im.format or ""
    except (binascii.Error, ValueError, UnidentifiedImageError, OSError):
        raise QueryError("the image to search by is not a picture mediasearch can read") from None
    if kind not in _UPLOAD_FORMATS:
        raise QueryError(f"cannot search by a {kind} image: use JPEG, PNG, WebP, GIF, BMP or TIFF")
    path = os.path.join(folder, f"upload-{n}.{_UPLOAD_FORMATS[kind]}")
    with open(path, "wb") as out:
        out.write(raw)
    return path


@contextlib.contextmanager
def _query_of(body: Any) -> Iterator["Query"]:
    """The body's Query; images sent as bytes live in a temporary folder while it runs."""
    if not any(t.data for t in body.terms):
        yield _to_query(body)
        return
    with tempfile.TemporaryDirectory(prefix="mediasearch-upload-") as folder:
        yield _to_query(body, folder)


def _to_query(body: Any, uploads: str | None = None) -> "Query":
    """A validated ``POST /query`` body as a search Query (``text`` first, then ``terms``)."""
    from mediasearch.library.requests import Query, Term

    terms = [Term("text", body.text)] if body.text else []
    for n, t in enumerate(body.terms):
        value = _save_upload(t.data, uploads, n) if t.data and uploads else t.value
        terms.append(Term(t.kind, value, t.weight))
    return Query(terms=tuple(terms), raw=body.raw, min_score=body.min_score, **_filters(body))


def _filters(body: Any) -> dict[str, Any]:
    """The limit, filters and order a ``/query`` or ``/similar`` body gives, as Query fields."""
    return {
        "limit": body.limit,
        "kind": body.kind,
        "path_prefix": os.path.abspath(body.path_prefix) if body.path_prefix else None,
        "tags": tuple(body.tags),
        "after": _when(body.after),
        "before": _when(body.before),
        "sort": body.sort,
    }


def _search_routes(app: Any, service: ServiceLike, guarded: list[Any]) -> None:
    from fastapi import Query as Param
    from pydantic import BaseModel, Field, model_validator

    from mediasearch.library.requests import Query

    class TermIn(BaseModel):
        kind: Literal["text", "image"] = "text"
        value: str = Field("", description="the text, or an image file on the daemon's machine")
        data: str | None = Field(default=None, description="an image's bytes in base64 (or a data: URL) instead")
        weight: float = 1.0

        @model_validator(mode="after")
        def _one_source(self) -> "TermIn":
            if self.data is not None and self.kind != "image":
                raise ValueError("only an image term can carry data")
            if not self.value and not self.data:
                raise ValueError("a term needs a value (or, for an image, data)")
            return self

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
        path_prefix: str | None = None
        tags: list[str] = Field(default_factory=list)
        after: float | str | None = None
        before: float | str | None = None
        sort: Literal["score", "date"] = "score"
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
        with _query_of(body) as parsed:
            return service.query(parsed, body.model)

    @app.get("/query", dependencies=guarded, response_model=list[HitOut], tags=["search"])
    def query_get(
        q: str, limit: Annotated[int, Param(ge=1, le=10000)] = 10, kind: Literal["image", "video"] | None = None
    ) -> list[dict[str, Any]]:
        """The same for a plain text (the search page uses it)."""
        return service.query(_to_query(QueryIn(text=q, limit=limit, kind=kind)))

    @app.post("/similar", dependencies=guarded, response_model=list[HitOut], tags=["search"])
    def similar(body: SimilarIn) -> list[dict[str, Any]]:
        """Items that look like a file (indexed or not), with the query's filters."""
        return service.similar(body.path, Query(**_filters(body)), body.model)


def _index_routes(app: Any, service: ServiceLike, guarded: list[Any]) -> None:
    from pydantic import BaseModel, Field

    from mediasearch.library.requests import IndexOptions

    class IndexIn(BaseModel):
        """`mediasearch index` as JSON; ``watch`` also adds the paths to the watched roots."""

        paths: list[str] = Field(min_length=1)
        frame_interval: float = Field(2.0, gt=0)
        max_frames: int = Field(600, ge=1)
        batch_size: int = Field(0, ge=0)
        workers: int = Field(0, ge=0)
        include_hidden: bool = False
        exact_times: bool = False
        tag: bool | None = None
        watch: bool = False
        model: str | None = None

    class PathIn(BaseModel):
        path: str

    class TagIn(BaseModel):
        vocab: str | None = Field(default=None, description="a vocabulary file on the daemon's machine")
        prompts: str | None = Field(default=None, description="a learned-prompts file on the daemon's machine")

    @app.get("/status", dependencies=guarded, tags=["daemon"])
    def status() -> dict[str, Any]:
        """`status --json`, plus a ``daemon`` section (roots, watching mode, busy, last rescan)."""
        return service.status()

    @app.post("/index", dependencies=guarded, tags=["index"])
    def index(body: IndexIn) -> dict[str, Any]:
        """Bring the index in step with folders (or files); answers `index --json` when done."""
        options = IndexOptions(
            body.frame_interval, body.max_frames, body.batch_size, body.workers, body.include_hidden,
            exact_times=body.exact_times,
        )
        return service.index(body.paths, options, tagging=body.tag, watch=body.watch, model=body.model)

    @app.post("/forget", dependencies=guarded, tags=["index"])
    def forget(body: PathIn) -> dict[str, Any]:
        """Drop a folder (or file) from the index, and stop watching roots under it."""
        return service.forget(body.path)

    @app.post("/tag", dependencies=guarded, tags=["index"])
    def tag(body: TagIn) -> dict[str, Any]:
        """Zero-shot tags for everything indexed (built-in vocabulary unless ``vocab``)."""
        return service.tag(body.vocab, body.prompts)

    @app.get("/tags", dependencies=guarded, tags=["search"])
    def tags() -> dict[str, int]:
        """The tags in the index, with how many files carry each."""
        return service.tags()


def _file_routes(app: Any, service: ServiceLike, guarded: list[Any]) -> None:
    from fastapi import Header, HTTPException
    from fastapi import Query as Param
    from fastapi.responses import FileResponse, HTMLResponse, Response

    @app.get("/thumbnail", dependencies=guarded, tags=["search"], response_class=Response)
    def thumbnail(
        path: str,
        size: Annotated[int, Param(ge=16, le=2048)] = 256,
        t: Annotated[float | None, Param(ge=0, description="a video's frame at this second")] = None,
        if_none_match: Annotated[str | None, Header()] = None,
    ) -> Response:
        """A JPEG of an indexed file, EXIF-rotated; for a video, its frame at ``t`` (404 for any path
        that is not in the index)."""
        data = service.thumbnail(path, size, t)
        tag = '"' + hashlib.sha256(data).hexdigest()[:24] + '"'
        headers = {"Cache-Control": THUMBNAIL_CACHING, "ETag": tag}
        if _unchanged(tag, if_none_match):
            return Response(status_code=304, headers=headers)
        return Response(data, media_type="image/jpeg", headers=headers)

    @app.get("/media", dependencies=guarded, tags=["search"], response_class=FileResponse)
    def media(path: str) -> FileResponse:
        """The original of an indexed file (404 for any other path), with HTTP ranges for seeking."""
        real, _ = service.media(path)
        kind = mimetypes.guess_type(real)[0] or "application/octet-stream"
        return FileResponse(real, media_type=kind, headers={"Cache-Control": "private, max-age=600", **_NOSNIFF})

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page(if_none_match: Annotated[str | None, Header()] = None) -> Response:
        return _asset_response("index.html", if_none_match)

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str, if_none_match: Annotated[str | None, Header()] = None) -> Response:
        if name not in WEB_ASSETS:
            raise HTTPException(404, "no such file")
        return _asset_response(name, if_none_match)


THUMBNAIL_CACHING = "private, max-age=600, stale-while-revalidate=86400"
WEB_ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}
_NOSNIFF = {"X-Content-Type-Options": "nosniff"}
# The page loads nothing from elsewhere; the token travels in its URL once, so no referrer either.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; media-src 'self'; object-src 'none'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    **_NOSNIFF,
}


@functools.cache
def web_asset(name: str) -> tuple[bytes, str]:
    """A file of the search page (package data in ``mediasearch/web``) and its ETag."""
    from importlib.resources import files

    data = (files("mediasearch") / "web" / name).read_bytes()
    return data, '"' + hashlib.sha256(data).hexdigest()[:24] + '"'


def _asset_response(name: str, if_none_match: str | None) -> Any:
    from fastapi.responses import Response

    data, tag = web_asset(name)
    headers = {"ETag": tag, "Cache-Control": "no-cache", **_PAGE_HEADERS}
    if _unchanged(tag, if_none_match):
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=WEB_ASSETS[name], headers=headers)


def _unchanged(tag: str, if_none_match: str | None) -> bool:
    """Whether the client's ``If-None-Match`` names ``tag`` (then a 304 answers)."""
    return bool(if_none_match) and tag in [v.strip().removeprefix("W/") for v in (if_none_match or "").split(",")]
