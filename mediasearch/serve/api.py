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
from http import HTTPStatus
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
    redact,
)
from mediasearch.library.client import TOKEN_HEADER
from mediasearch.serve.security import (
    ADMIN,
    DEFAULT_THRESHOLD,
    MAX_FRAMES,
    MAX_LABELS,
    MAX_TERMS,
    MAX_UPLOAD_BYTES,
    READ,
    Boundary,
    HostCheck,
    Tokens,
)

if TYPE_CHECKING:
    from mediasearch.library.requests import IndexOptions, Query, Vocabulary
    from mediasearch.serve.files import ServedFile

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

    def tag(self, vocabulary: "Vocabulary | None", prompts: str | None = None) -> dict[str, Any]: ...

    def indexed_path(self, path: str) -> str: ...

    def tags(self) -> dict[str, int]: ...

    def places(self) -> list[dict[str, Any]]: ...

    def thumbnail(self, path: str, size: int, at: float | None = None) -> bytes: ...

    def media(self, path: str) -> "ServedFile": ...

    def duplicates(self, paths: list[str], threshold: float | None = None) -> list[dict[str, Any]]: ...

    def text(self, path: str) -> dict[str, Any]: ...


class MissingFileError(QueryError):
    """A file a request names (an image to search by, a vocabulary) is not a file on the daemon's machine."""


def status_code(exc: MediaSearchError) -> int:
    """The HTTP status for a domain error (404 not indexed, 503 not ready, 400 bad query, ...)."""
    name = type(exc).__name__
    if name in ("NotIndexedError", "MissingFileError", "UnknownPersonError"):
        return 404
    if name == "OutsideRootsError":
        return 403
    if name == "NotReadyError":
        return 503
    for kind, code in _STATUS_CODES:
        if isinstance(exc, kind):
            return code
    return 500


def create_app(
    service: ServiceLike,
    tokens: Tokens | str,
    *,
    instance: Callable[[], dict[str, Any]] | None = None,
    hosts: HostCheck | None = None,
) -> Any:
    """The FastAPI app over ``service``, behind the trust boundary (`security.Boundary`): the read token
    searches and views, the admin token also changes the index; health, the spec and the page are open.
    A single token (a string) is the admin token, with a random read token beside it."""
    from fastapi import Depends, FastAPI

    if isinstance(tokens, str):
        tokens = Tokens(tokens, secrets.token_urlsafe(24))
    app = FastAPI(
        title="mediasearch",
        version=__version__,
        description="Semantic search over photo and video folders (the mediasearch daemon).",
        generate_unique_id_function=_operation_id,
        docs_url=None,  # Swagger UI and ReDoc load scripts from a CDN: not on the origin that keeps the token
        redoc_url=None,
    )
    app.add_middleware(Boundary, tokens=tokens, hosts=hosts or HostCheck.for_daemon())

    _error_handlers(app)
    health_out = _health_model()

    @app.get("/health", tags=["daemon"], response_model=health_out)
    async def health() -> dict[str, Any]:
        """Liveness (no token): the state, and the instance id the port file names. Answered on the event
        loop, not a worker thread: it stays quick however busy the routes are."""
        message = redact(service.message)
        return {"ok": True, "state": service.state, "message": message, **(instance() if instance else {})}

    guarded = [Depends(_token_check(tokens, READ))]
    admin = [Depends(_token_check(tokens, ADMIN))]
    _search_routes(app, service, guarded)
    _index_routes(app, service, guarded, admin)
    _file_routes(app, service, guarded)
    _organise_routes(app, service, guarded)
    from mediasearch.serve.text_routes import text_routes

    text_routes(app, service, guarded, errors(400, 404, 422, 503))

    from mediasearch.serve.places_routes import places_routes

    places_routes(app, service, guarded, errors)

    from mediasearch.serve.people_routes import people_routes

    people_routes(app, service, guarded, errors)
    return app


def _operation_id(route: Any) -> str:
    """Each operation is named after its route function (``query``, ``status``): generated clients read well."""
    return str(route.name)


ERROR_MEANINGS = {
    400: "a request the daemon cannot run (a bad query, a file that is not what it should be)",
    401: "no valid token",
    403: "the read token cannot do this (it needs the admin token), or a path outside the library roots",
    404: "a path that is not indexed, or a file the request names that does not exist",
    409: "the request names another model than the daemon's",
    413: "the request body is larger than its cap (docs/security.md)",
    422: "a request that does not match this schema (or a media file that cannot be decoded)",
    503: "the daemon is starting, stopping or rebuilding its index, or its store failed: try again",
}


@functools.cache
def error_model() -> Any:
    """The one shape of every error answer: ``{"error": "one line", "kind": "QueryError"}``."""
    from pydantic import BaseModel, Field

    class Error(BaseModel):
        """An error: one line a user can act on, and the kind of error (a `mediasearch.errors` class name)."""

        error: str
        kind: str = Field(description="the error's class, e.g. QueryError, NotIndexedError, ValidationError")
        detail: list[dict[str, Any]] | None = Field(default=None, description="what failed validation (422)")

    return Error


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of a route that can answer these error statuses (401 is added: every guarded route)."""
    return {code: {"model": error_model(), "description": ERROR_MEANINGS[code]} for code in sorted({401, *codes})}


def _error_handlers(app: Any) -> None:
    """Every error answer in the one error model: domain errors, HTTP errors (401, 404, 405), validation."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    @app.exception_handler(MediaSearchError)
    def domain_error(request: Request, exc: MediaSearchError) -> JSONResponse:
        return JSONResponse({"error": redact(str(exc)), "kind": type(exc).__name__}, status_code=status_code(exc))

    @app.exception_handler(HTTPException)
    def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        known = exc.status_code in _PHRASES
        kind = "".join(HTTPStatus(exc.status_code).phrase.title().split()) if known else "HTTPError"
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # the router names the first route's methods; a path may have several
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return JSONResponse({"error": str(exc.detail), "kind": kind}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        from fastapi.encoders import jsonable_encoder

        detail = jsonable_encoder(exc.errors())
        first = "; ".join(f"{_location(d)}: {d.get('msg', '')}" for d in detail[:3]) or "invalid request"
        return JSONResponse({"error": first, "kind": "ValidationError", "detail": detail}, status_code=422)


_PHRASES = {s.value for s in HTTPStatus}


def _allowed_methods(request: Any) -> list[str]:
    """Every method some route serves at the request's path (for a 405's ``Allow``)."""
    methods: set[str] = set()
    for route in request.app.routes:
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(request.url.path):
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def _location(error: dict[str, Any]) -> str:
    """Where a validation error is: ``body.terms.0.value``."""
    return ".".join(str(part) for part in error.get("loc", ()))


@functools.cache
def _health_model() -> Any:
    from pydantic import BaseModel

    class Health(BaseModel):
        """``GET /health``: alive, its state (starting, ready, busy, stopping) and the port file's instance."""

        ok: bool
        state: str
        message: str
        instance: str | None = None
        pid: int | None = None

    return Health


def _organise_routes(app: Any, service: ServiceLike, guarded: list[Any]) -> None:
    """Organising a library: duplicates."""
    from pydantic import BaseModel, ConfigDict, Field

    from mediasearch.library.types import DuplicateGroup

    class DuplicatesIn(BaseModel):
        model_config = ConfigDict(strict=True)

        paths: list[str] = Field(default_factory=list, description="folders or files (default: everything)")
        threshold: float | None = Field(default=None, gt=0, le=1, description="pixel similarity, default 0.95")

    @app.post("/duplicates", dependencies=guarded, response_model=list[DuplicateGroup],
              responses=errors(400, 413, 422, 503), tags=["search"])
    def duplicates(body: DuplicatesIn) -> list[dict[str, Any]]:
        """`duplicates --json`: groups of exact and near copies, largest first."""
        return service.duplicates([os.path.abspath(p) for p in body.paths], body.threshold)


def _token_check(tokens: Tokens, needed: str) -> Callable[..., None]:
    from fastapi import HTTPException, Security
    from fastapi.security import APIKeyHeader, APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer

    header = APIKeyHeader(name=TOKEN_HEADER, auto_error=False)
    query = APIKeyQuery(name="token", auto_error=False)
    bearer = HTTPBearer(auto_error=False)

    def check(
        from_header: Annotated[str | None, Security(header)],
        from_query: Annotated[str | None, Security(query)],
        from_bearer: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    ) -> None:
        given = from_header or (from_bearer.credentials if from_bearer else None) or from_query
        role = tokens.role(given)
        if role is None:
            raise HTTPException(401, f"a valid token is required (header {TOKEN_HEADER}, Bearer, or ?token=)")
        if needed == ADMIN and role != ADMIN:
            raise HTTPException(403, "this needs the admin token (the read token searches and views)")

    return check


def _when(value: float | str | None) -> float | None:
    from mediasearch.library.requests import parse_date

    return parse_date(value) if isinstance(value, str) else value


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
def _query_of(body: Any, indexed: Callable[[str], str]) -> Iterator["Query"]:
    """The body's Query; images sent as bytes live in a temporary folder while it runs, images named
    by path must be indexed (``indexed`` gives the stored path, or refuses)."""
    if not any(t.data for t in body.terms):
        yield _to_query(body, indexed)
        return
    with tempfile.TemporaryDirectory(prefix="mediasearch-upload-") as folder:
        yield _to_query(body, indexed, folder)


def _to_query(body: Any, indexed: Callable[[str], str], uploads: str | None = None) -> "Query":
    """A validated ``POST /query`` body as a search Query (``text`` first, then ``terms``)."""
    from mediasearch.library.requests import Query, Term

    terms = [Term("text", body.text)] if body.text else []
    for n, t in enumerate(body.terms):
        if t.data and uploads:
            value = _save_upload(t.data, uploads, n)
        else:
            value = indexed(t.value) if t.kind == "image" else t.value
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
        "near": (body.near.lat, body.near.lon, body.near.km) if body.near is not None else None,
        "camera": body.camera,
    }


DATE_PATTERN = r"^[1-9][0-9]{3}(-(0[1-9]|1[0-2]))?$"
MIN_POSITIVE_WEIGHT = 0.001  # a lighter term does not make a query: alone, it could not be normalised
WEIGHT_LIMIT = 100.0  # beyond it a sum of unit vectors may overflow: the query could not be normalised
IMAGE_FORMAT = "mediasearch-image"  # a string format: a JPEG, PNG, WebP, GIF, BMP or TIFF picture in base64


def _date_text(value: str) -> str:
    """A date filter's text: ``YYYY``, ``YYYY-MM`` or ``YYYY-MM-DD`` (what the schema says, exactly)."""
    import datetime as dt
    import re

    if not re.fullmatch(DATE_PATTERN, value):
        try:
            dt.date.fromisoformat(value)
        except ValueError:
            raise ValueError("a date is YYYY, YYYY-MM or YYYY-MM-DD (or a unix time as a number)") from None
        if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
            raise ValueError("a date is YYYY, YYYY-MM or YYYY-MM-DD (or a unix time as a number)")
    return value


def _existing_file(path: str) -> str:
    """``path`` (absolute) if it is a regular file on this machine, else a 404."""
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise MissingFileError(f"no such file: {path}")
    return path


STRING, NULL = {"type": "string"}, {"type": "null"}
# The requests' rules that span fields, as `if`/`not` (what no request may be): validators read them
# exactly, and client generators, which make a union type of every `anyOf`, leave them alone.
# A text term has a value and no data; an image term a value (a file) or data (its bytes), not both.
TERM_SOURCES: dict[str, Any] = {
    "if": {"properties": {"kind": {"const": "image"}}, "required": ["kind"]},
    "then": {"oneOf": [{"required": ["value"]}, {"required": ["data"]}]},
    "else": {"required": ["value"], "not": {"required": ["data"]}},
}
POSITIVE_TERM: dict[str, Any] = {
    "anyOf": [{"not": {"required": ["weight"]}}, {"properties": {"weight": {"minimum": MIN_POSITIVE_WEIGHT}}}]
}
NOT_A_QUERY: dict[str, Any] = {"properties": {"text": NULL, "terms": {"not": {"contains": POSITIVE_TERM}}}}
NOT_A_TAGGING: dict[str, Any] = {
    "properties": {"labels": {"type": "array"}, "prompts": STRING}, "required": ["labels", "prompts"]
}


def _date_schema() -> Any:
    """A date filter's schema: a unix time, or a date as text (what `_date_text` accepts, exactly)."""
    from pydantic import WithJsonSchema

    return WithJsonSchema({
        "anyOf": [
            {"type": "number"},
            {"type": "string", "format": "date"},
            {"type": "string", "pattern": DATE_PATTERN},
            {"type": "null"},
        ],
        "description": "a unix time, or YYYY, YYYY-MM or YYYY-MM-DD (local time)",
    })


def _whole() -> Any:
    """Take a whole number written as a float (``46.0``): JSON Schema's integers include them; no bools."""
    from pydantic import BeforeValidator

    return BeforeValidator(lambda v: int(v) if isinstance(v, float) and v.is_integer() else v)


def _date_check() -> Any:
    from pydantic import AfterValidator

    return AfterValidator(lambda v: _date_text(v) if isinstance(v, str) else v)


def _search_routes(app: Any, service: ServiceLike, guarded: list[Any]) -> None:
    from fastapi import Query as Param
    from pydantic import BaseModel, ConfigDict, Field, model_validator

    from mediasearch.library.requests import Query
    from mediasearch.library.types import Hit


    class Term(BaseModel):
        """A text, or an image (a file on the daemon's machine, or its bytes); a negative weight subtracts."""

        model_config = ConfigDict(strict=True, json_schema_extra=TERM_SOURCES)

        kind: Literal["text", "image"] = "text"
        # No default in the schema (a factory's is not shown): a client that sends defaults must not send "".
        value: str = Field(
            default_factory=str, min_length=1, description="the text, or an image file on the daemon's machine"
        )
        data: str = Field(
            default_factory=str,
            min_length=1,
            description="an image's bytes in base64 (or a data: URL), instead of a file",
            json_schema_extra={"format": IMAGE_FORMAT},
        )
        weight: float = Field(1.0, ge=-WEIGHT_LIMIT, le=WEIGHT_LIMIT)

        @model_validator(mode="after")
        def _one_source(self) -> "Term":
            if self.kind == "text" and (self.data or not self.value):
                raise ValueError("a text term needs a value, and no data")
            if self.kind == "image" and bool(self.value) == bool(self.data):
                raise ValueError("an image term needs a value (a file) or data, not both")
            return self

    class Near(BaseModel):
        """Taken within ``km`` kilometres of a place (EXIF GPS, a video's location): `query --near`."""

        model_config = ConfigDict(strict=True)

        lat: float = Field(ge=-90, le=90)
        lon: float = Field(ge=-180, le=180)
        km: float = Field(gt=0, lt=40_100)

    class QueryRequest(BaseModel):
        """`mediasearch query` as JSON: a ``text`` (one text term), or ``terms`` of which one weighs at least 0.001."""

        model_config = ConfigDict(strict=True, json_schema_extra={"not": NOT_A_QUERY})

        text: str | None = Field(None, min_length=1)
        terms: list[Term] = Field(default_factory=list, max_length=MAX_TERMS)
        raw: bool = False
        limit: Annotated[int, _whole()] = Field(10, ge=1, le=10000)
        kind: Literal["image", "video"] | None = None
        path_prefix: str | None = None
        tags: list[str] = Field(default_factory=list)
        after: Annotated[float | str | None, _date_schema(), _date_check()] = None
        before: Annotated[float | str | None, _date_schema(), _date_check()] = None
        min_score: float | None = None
        near: Near | None = None
        camera: str | None = Field(None, min_length=1, description="only from a camera with these words")
        sort: Literal["score", "date"] = "score"
        model: str | None = Field(default=None, description="refuse (409) unless the daemon answers with this model")

        @model_validator(mode="after")
        def _something(self) -> "QueryRequest":
            if self.text is None and not any(t.weight >= MIN_POSITIVE_WEIGHT for t in self.terms):
                raise ValueError(f"a query needs a text, or a term with a weight of at least {MIN_POSITIVE_WEIGHT}")
            return self

    class SimilarRequest(BaseModel):
        """`mediasearch similar` as JSON: an indexed file."""

        model_config = ConfigDict(strict=True)

        path: str = Field(min_length=1)
        limit: Annotated[int, _whole()] = Field(10, ge=1, le=10000)
        kind: Literal["image", "video"] | None = None
        path_prefix: str | None = None
        tags: list[str] = Field(default_factory=list)
        after: Annotated[float | str | None, _date_schema(), _date_check()] = None
        before: Annotated[float | str | None, _date_schema(), _date_check()] = None
        near: Near | None = None
        camera: str | None = Field(None, min_length=1, description="only from a camera with these words")
        sort: Literal["score", "date"] = "score"
        model: str | None = None

    searching = errors(400, 404, 409, 413, 422, 503)

    @app.post("/query", dependencies=guarded, response_model=list[Hit], responses=searching, tags=["search"])
    def query(body: QueryRequest) -> list[dict[str, Any]]:
        """Nearest items to texts and example images (negative weights subtract), best first."""
        with _query_of(body, lambda path: service.indexed_path(path)) as parsed:
            return service.query(parsed, body.model)

    @app.get("/query", dependencies=guarded, response_model=list[Hit], responses=searching, tags=["search"])
    def query_get(
        q: Annotated[str, Param(min_length=1)],
        limit: Annotated[int, Param(ge=1, le=10000)] = 10,
        kind: Literal["image", "video"] | None = None,
    ) -> list[dict[str, Any]]:
        """The same for a plain text (the search page uses it)."""
        return service.query(Query(terms=(_text_term(q),), limit=limit, kind=kind))

    @app.post("/similar", dependencies=guarded, response_model=list[Hit], responses=searching, tags=["search"])
    def similar(body: SimilarRequest) -> list[dict[str, Any]]:
        """Items that look like an indexed file, with the query's filters; 404 for any other path (to search
        by a picture that is not indexed, send its bytes to ``POST /query``)."""
        return service.similar(body.path, Query(**_filters(body)), body.model)


def _text_term(text: str) -> Any:
    from mediasearch.library.requests import Term

    return Term("text", text)


def _index_routes(app: Any, service: ServiceLike, guarded: list[Any], admin: list[Any]) -> None:
    from pydantic import BaseModel, ConfigDict, Field, model_validator

    from mediasearch.library.requests import IndexOptions
    from mediasearch.library.types import ForgetReport, IndexReport, Status, TagReport


    class IndexRequest(BaseModel):
        """`mediasearch index` as JSON; ``watch`` also adds the paths to the watched roots."""

        model_config = ConfigDict(strict=True)

        paths: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)
        frame_interval: float = Field(2.0, gt=0)
        max_frames: Annotated[int, _whole()] = Field(600, ge=1, le=MAX_FRAMES)
        batch_size: Annotated[int, _whole()] = Field(0, ge=0)
        workers: Annotated[int, _whole()] = Field(0, ge=0)
        include_hidden: bool = False
        exact_times: bool = False
        retry_failed: bool = False
        tag: bool | None = None
        watch: bool = False
        model: str | None = None

    class ForgetRequest(BaseModel):
        model_config = ConfigDict(strict=True)

        path: str = Field(min_length=1)

    class TagRequest(BaseModel):
        """A vocabulary (its labels, each with an optional threshold) or a learned-prompts file under the
        library roots, not both; neither: the built-in vocabulary. No other path is read."""

        model_config = ConfigDict(strict=True, extra="forbid", json_schema_extra={"not": NOT_A_TAGGING})

        labels: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
            default=None, min_length=1, max_length=MAX_LABELS, description="the tags to assign"
        )
        thresholds: dict[str, Annotated[float, Field(ge=0, le=1)]] = Field(
            default_factory=dict, max_length=MAX_LABELS, description="a label's own threshold (default 0.5)"
        )
        prompts: str | None = Field(
            default=None, min_length=1, description="a learned-prompts file under the library roots"
        )

        @model_validator(mode="after")
        def _not_both(self) -> "TagRequest":
            if self.labels is not None and self.prompts is not None:
                raise ValueError("give a vocabulary or learned prompts, not both")
            return self

    @app.get("/status", dependencies=guarded, response_model=Status, responses=errors(503), tags=["daemon"])
    def status() -> dict[str, Any]:
        """`status --json`, plus a ``daemon`` section (roots, watching mode, busy, last rescan)."""
        return service.status()

    @app.post("/index", dependencies=admin, response_model=IndexReport, responses=errors(400, 403, 409, 413, 422, 503),
              tags=["index"])
    def index(body: IndexRequest) -> dict[str, Any]:
        """Bring the index in step with folders (or files); answers `index --json` when done."""
        options = IndexOptions(
            body.frame_interval, body.max_frames, body.batch_size, body.workers, body.include_hidden,
            exact_times=body.exact_times, retry_failed=body.retry_failed,
        )
        return service.index(body.paths, options, tagging=body.tag, watch=body.watch, model=body.model)

    @app.post("/forget", dependencies=admin, response_model=ForgetReport,
              responses=errors(400, 403, 404, 413, 422, 503), tags=["index"])
    def forget(body: ForgetRequest) -> dict[str, Any]:
        """Drop a folder (or file) from the index, and stop watching roots under it."""
        return service.forget(body.path)

    @app.post("/tag", dependencies=admin, response_model=TagReport, responses=errors(400, 403, 404, 413, 422, 503),
              tags=["index"])
    def tag(body: TagRequest) -> dict[str, Any]:
        """Zero-shot tags for everything indexed (built-in vocabulary unless ``vocab`` or ``prompts``); 404 for
        a file that does not exist."""
        from mediasearch.library.requests import Vocabulary

        vocabulary = None
        if body.labels is not None:
            labels = tuple(dict.fromkeys(body.labels))
            vocabulary = Vocabulary(labels, tuple(body.thresholds.get(label, DEFAULT_THRESHOLD) for label in labels))
        return service.tag(vocabulary, body.prompts)

    @app.get("/tags", dependencies=guarded, response_model=dict[str, int], responses=errors(503), tags=["search"])
    def tags() -> dict[str, int]:
        """The tags in the index, with how many files carry each."""
        return service.tags()


def _file_routes(app: Any, service: ServiceLike, guarded: list[Any]) -> None:
    from fastapi import Header, HTTPException
    from fastapi import Query as Param
    from fastapi.responses import FileResponse, HTMLResponse, Response

    jpeg: dict[int | str, dict[str, Any]] = {
        200: {"content": {"image/jpeg": {}}, "description": "the thumbnail"},
        304: {"description": "unchanged"},
    }
    original: dict[int | str, dict[str, Any]] = {
        200: {"content": {"image/*": {}, "video/*": {}}, "description": "the file"},
        206: {"description": "the part of the file a Range asked for"},
    }

    @app.get("/thumbnail", dependencies=guarded, tags=["search"], response_class=Response,
             responses={**jpeg, **errors(404, 422, 503)})
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

    @app.get("/media", dependencies=guarded, tags=["search"], response_class=FileResponse,
             responses={**original, **errors(404, 422, 503)})
    def media(path: str) -> FileResponse:
        """The original of an indexed file (404 for any other path), with HTTP ranges for seeking."""
        served = service.media(path)
        try:
            return _descriptor_response(served)
        except BaseException:
            served.close()
            raise

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page(if_none_match: Annotated[str | None, Header()] = None) -> Response:
        return _asset_response("index.html", if_none_match)

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str, if_none_match: Annotated[str | None, Header()] = None) -> Response:
        if name not in WEB_ASSETS:
            raise HTTPException(404, "no such file")
        return _asset_response(name, if_none_match)


def _descriptor_response(served: "ServedFile") -> Any:
    """A FileResponse (ranges, ETag, HEAD) that reads the descriptor the daemon checked, never the path
    again; the descriptor is closed when the response is done (or abandoned)."""
    import anyio
    from fastapi.responses import FileResponse

    class DescriptorResponse(FileResponse):
        @contextlib.asynccontextmanager
        async def _open_file(self) -> Any:
            source = os.fdopen(os.dup(served.fd), "rb")
            source.seek(0)
            file = anyio.wrap_file(source)
            try:
                yield file
            finally:
                with anyio.CancelScope(shield=True):
                    await file.aclose()

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            extensions = {k: v for k, v in scope.get("extensions", {}).items() if k != "http.response.pathsend"}
            try:
                await super().__call__({**scope, "extensions": extensions}, receive, send)
            finally:
                served.close()

    kind = mimetypes.guess_type(served.path)[0] or "application/octet-stream"
    headers = {"Cache-Control": "private, max-age=600", **_NOSNIFF}
    return DescriptorResponse(served.path, media_type=kind, headers=headers, stat_result=served.stat)


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
