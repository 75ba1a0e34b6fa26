"""The HTTP API's errors: which status each domain error gets, and the one error model every answer uses."""

from http import HTTPStatus
from typing import Any

from mediasearch.errors import (
    ConfigError,
    DataError,
    MediaError,
    MediaSearchError,
    MissingFileError,
    ModelMismatchError,
    QueryError,
    StoreError,
    redact,
)

__all__ = ["MissingFileError", "add_error_handlers", "error_model", "errors", "status_code"]

_STATUS_CODES: list[tuple[type[MediaSearchError], int]] = [
    (QueryError, 400),
    (ConfigError, 400),
    (DataError, 400),  # e.g. a file named in the request that is not what it should be
    (MediaError, 422),
    (ModelMismatchError, 409),
    (StoreError, 503),
]

ERROR_MEANINGS = {
    400: "a request the daemon cannot run (a bad query, a file that is not what it should be)",
    401: "no valid token",
    403: "the read token cannot do this (it needs the admin token), or a path outside the library roots",
    404: "a path that is not indexed, a file the request names that does not exist, or an unknown person",
    409: "the request names another model than the daemon's",
    413: "the request body is larger than its cap (docs/security.md)",
    422: "a request that does not match this schema (or a media file that cannot be decoded)",
    503: "the daemon is starting, stopping or rebuilding its index, or its store failed: try again",
}
_PHRASES = {s.value for s in HTTPStatus}


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


def error_model() -> Any:
    """The one shape of every error answer: ``{"error": "one line", "kind": "QueryError"}``."""
    from mediasearch.serve.schemas import Error

    return Error


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of a route that can answer these error statuses (401 is added: every guarded route)."""
    return {code: {"model": error_model(), "description": ERROR_MEANINGS[code]} for code in sorted({401, *codes})}


def add_error_handlers(app: Any) -> None:
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
