"""The daemon's HTTP API (FastAPI): the app, what it needs from the daemon, and the token it checks.

Every route but ``/health``, the OpenAPI spec (``/openapi.json``, ``/docs``) and the search page
(``/`` and its ``/static/`` files, shipped in ``mediasearch/web``) needs the daemon's token (header
``X-Mediasearch-Token``, ``Authorization: Bearer``, or ``?token=``; pictures and videos the page shows
carry it as ``?token=``, since an ``<img>`` or ``<video>`` cannot send a header).
JSON bodies and answers are the CLI's ``--json`` documents. The pieces are modules of their own:
the routes (``routes.py``), the request and answer models (``schemas.py``), errors (``errors.py``),
files a request sends or names (``uploads.py``) and the page's files (``assets.py``). FastAPI is
imported inside `create_app`.
"""

import secrets
from collections.abc import Callable
from typing import Annotated, Any

from mediasearch import __version__
from mediasearch.library.client import TOKEN_HEADER
from mediasearch.serve import routes
from mediasearch.serve.errors import MissingFileError, add_error_handlers, error_model, errors, status_code
from mediasearch.serve.routes import ServiceLike

__all__ = ["MissingFileError", "ServiceLike", "create_app", "error_model", "errors", "status_code"]


def create_app(service: ServiceLike, token: str, *, instance: Callable[[], dict[str, Any]] | None = None) -> Any:
    """The FastAPI app over ``service``; ``token`` guards everything but health, docs and the page."""
    from fastapi import Depends, FastAPI

    from mediasearch.serve.schemas import Health

    app = FastAPI(
        title="mediasearch",
        version=__version__,
        description="Semantic search over photo and video folders (the mediasearch daemon).",
        generate_unique_id_function=_operation_id,
    )

    add_error_handlers(app)

    @app.get("/health", tags=["daemon"], response_model=Health)
    def health() -> dict[str, Any]:
        """Liveness (no token): the state, and the instance id the port file names."""
        return {"ok": True, "state": service.state, "message": service.message, **(instance() if instance else {})}

    guarded = [Depends(_token_check(token))]
    routes.search_routes(app, service, guarded)
    routes.index_routes(app, service, guarded)
    routes.file_routes(app, service, guarded)
    routes.organise_routes(app, service, guarded)
    from mediasearch.serve.text_routes import text_routes

    text_routes(app, service, guarded, errors(400, 404, 422, 503))

    from mediasearch.serve.places_routes import places_routes

    places_routes(app, service, guarded, errors)
    return app


def _operation_id(route: Any) -> str:
    """Each operation is named after its route function (``query``, ``status``): generated clients read well."""
    return str(route.name)


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
