"""The HTTP API's routes, by job: searching, indexing, files (thumbnails, originals, the page), organising.

Request bodies are the models of ``schemas.py``; the query fields come from the one query
specification and become a search ``Query`` through ``library.requests.query_of``, as the command
line's do. Deliberately without ``from __future__ import annotations``: FastAPI reads the signatures.
"""

import hashlib
import os
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol

from mediasearch import queryspec
from mediasearch.serve import schemas
from mediasearch.serve.assets import NOSNIFF, WEB_ASSETS, asset_response, unchanged
from mediasearch.serve.errors import errors
from mediasearch.serve.security import DEFAULT_THRESHOLD
from mediasearch.serve.uploads import request_terms

if TYPE_CHECKING:
    from mediasearch.library.requests import IndexOptions, Query, Vocabulary
    from mediasearch.serve.files import ServedFile

THUMBNAIL_CACHING = "private, max-age=600, stale-while-revalidate=86400"


class ServiceLike(Protocol):
    """What the API needs from the daemon (`daemon.Service`); tests may hand in a stub."""

    state: str
    message: str

    def query(self, query: "Query", model: str | None = None) -> list[dict[str, Any]]: ...

    def explain(self, query: "Query", model: str | None = None) -> dict[str, Any]: ...

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


def search_routes(app: Any, service: "ServiceLike", guarded: list[Any]) -> None:
    from fastapi import Query as Param

    from mediasearch.library.requests import query_of
    from mediasearch.library.types import Explanation, Hit

    searching = errors(400, 404, 409, 413, 422, 503)

    @app.post("/query", dependencies=guarded, response_model=list[Hit] | Explanation, responses=searching,
              tags=["search"])
    def query(body: schemas.QueryRequest) -> Any:
        """Nearest items to texts and example images (negative weights subtract), best first; with
        ``explain``, how the text was read instead."""
        values = schemas.spec_values(body, queryspec.QUERY_FIELDS)
        for images in ("image", "not_image"):  # pictures named by path must be indexed ones
            values[images] = tuple(service.indexed_path(path) for path in values[images])
        with request_terms(body.terms, service.indexed_path) as terms:
            parsed = query_of(values, terms=terms)
            if values["explain"]:
                return service.explain(parsed, body.model)
            return service.query(parsed, body.model)

    @app.get("/query", dependencies=guarded, response_model=list[Hit], responses=searching, tags=["search"])
    def query_get(
        q: Annotated[str, Param(min_length=1, max_length=queryspec.MAX_TEXT)],
        limit: Annotated[int, Param(ge=1, le=queryspec.MAX_LIMIT)] = 10,
        kind: Literal["image", "video"] | None = None,
    ) -> list[dict[str, Any]]:
        """The same for a plain text (the search page uses it)."""
        return service.query(query_of({"text": q, "limit": limit, "kind": kind}))

    @app.post("/similar", dependencies=guarded, response_model=list[Hit], responses=searching, tags=["search"])
    def similar(body: schemas.SimilarRequest) -> list[dict[str, Any]]:
        """Items that look like an indexed file, with the query's filters; 404 for any other path (to search
        by a picture that is not indexed, send its bytes to ``POST /query``)."""
        parsed = query_of(schemas.spec_values(body, queryspec.SIMILAR_FIELDS), similar=True)
        return service.similar(body.path, parsed, body.model)


def index_routes(app: Any, service: "ServiceLike", guarded: list[Any], admin: list[Any]) -> None:
    from mediasearch.library.requests import IndexOptions
    from mediasearch.library.types import ForgetReport, IndexReport, Status, TagReport

    @app.get("/status", dependencies=guarded, response_model=Status, responses=errors(503), tags=["daemon"])
    def status() -> dict[str, Any]:
        """`status --json`, plus a ``daemon`` section (roots, watching mode, busy, last rescan)."""
        return service.status()

    @app.post("/index", dependencies=admin, response_model=IndexReport,
              responses=errors(400, 403, 409, 413, 422, 503), tags=["index"])
    def index(body: schemas.IndexRequest) -> dict[str, Any]:
        """Bring the index in step with folders (or files); answers `index --json` when done."""
        options = IndexOptions(
            body.frame_interval, body.max_frames, body.batch_size, body.workers, body.include_hidden,
            exact_times=body.exact_times, retry_failed=body.retry_failed,
        )
        return service.index(body.paths, options, tagging=body.tag, watch=body.watch, model=body.model)

    @app.post("/forget", dependencies=admin, response_model=ForgetReport,
              responses=errors(400, 403, 404, 413, 422, 503), tags=["index"])
    def forget(body: schemas.ForgetRequest) -> dict[str, Any]:
        """Drop a folder (or file) from the index, and stop watching roots under it."""
        return service.forget(body.path)

    @app.post("/tag", dependencies=admin, response_model=TagReport,
              responses=errors(400, 403, 404, 413, 422, 503), tags=["index"])
    def tag(body: schemas.TagRequest) -> dict[str, Any]:
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


def file_routes(app: Any, service: "ServiceLike", guarded: list[Any]) -> None:
    from fastapi import Header, HTTPException
    from fastapi import Query as Param
    from fastapi.responses import FileResponse, HTMLResponse, Response

    from mediasearch.serve.files import descriptor_response

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
        if unchanged(tag, if_none_match):
            return Response(status_code=304, headers=headers)
        return Response(data, media_type="image/jpeg", headers=headers)

    @app.get("/media", dependencies=guarded, tags=["search"], response_class=FileResponse,
             responses={**original, **errors(404, 422, 503)})
    def media(path: str) -> FileResponse:
        """The original of an indexed file (404 for any other path), with HTTP ranges for seeking."""
        served = service.media(path)
        try:
            return descriptor_response(served, {"Cache-Control": "private, max-age=600", **NOSNIFF})
        except BaseException:
            served.close()
            raise

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page(if_none_match: Annotated[str | None, Header()] = None) -> Response:
        return asset_response("index.html", if_none_match)

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str, if_none_match: Annotated[str | None, Header()] = None) -> Response:
        if name not in WEB_ASSETS:
            raise HTTPException(404, "no such file")
        return asset_response(name, if_none_match)


def organise_routes(app: Any, service: "ServiceLike", guarded: list[Any]) -> None:
    """Organising a library: duplicates."""
    from mediasearch.library.types import DuplicateGroup

    @app.post("/duplicates", dependencies=guarded, response_model=list[DuplicateGroup],
              responses=errors(400, 413, 422, 503), tags=["search"])
    def duplicates(body: schemas.DuplicatesIn) -> list[dict[str, Any]]:
        """`duplicates --json`: groups of exact and near copies, largest first."""
        return service.duplicates([os.path.abspath(p) for p in body.paths], body.threshold)
