"""The daemon's HTTP API (FastAPI): the app, what it needs from the daemon, and the token it checks.

Every route but ``/health``, the OpenAPI spec (``/openapi.json``, ``/docs``) and the search page
(``/`` and its ``/static/`` files, shipped in ``mediasearch/web``) needs the daemon's token (header
``X-Mediasearch-Token``, ``Authorization: Bearer``, or ``?token=``; pictures and videos the page shows
carry it as ``?token=``, since an ``<img>`` or ``<video>`` cannot send a header); the read token
searches and views, the admin token also changes the index (``security.py``).
JSON bodies and answers are the CLI's ``--json`` documents. The pieces are modules of their own:
the routes (``routes.py``), the request and answer models (``schemas.py``), errors (``errors.py``),
files a request sends or names (``uploads.py``) and the page's files (``assets.py``). FastAPI is
imported inside `create_app`.
"""

import secrets
from collections.abc import Callable
from typing import Annotated, Any

from mediasearch import __version__
from mediasearch.errors import redact
from mediasearch.library.client import TOKEN_HEADER
from mediasearch.serve import routes
from mediasearch.serve.errors import MissingFileError, add_error_handlers, error_model, errors, status_code
from mediasearch.serve.routes import ServiceLike
from mediasearch.serve.security import ADMIN, READ, Boundary, HostCheck, Tokens

__all__ = ["MissingFileError", "ServiceLike", "create_app", "error_model", "errors", "status_code"]


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

    from mediasearch.serve.schemas import Health

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
    add_error_handlers(app)

    @app.get("/health", tags=["daemon"], response_model=Health)
    async def health() -> dict[str, Any]:
        """Liveness (no token): the state, and the instance id the port file names. Answered on the event
        loop, not a worker thread: it stays quick however busy the routes are."""
        state, message = service.shown_state() if hasattr(service, "shown_state") else (service.state, service.message)
        return {"ok": True, "state": state, "message": redact(message), **(instance() if instance else {})}

    guarded = [Depends(_token_check(tokens, READ))]
    admin = [Depends(_token_check(tokens, ADMIN))]
    routes.search_routes(app, service, guarded)
    routes.index_routes(app, service, guarded, admin)
    routes.file_routes(app, service, guarded)
    routes.organise_routes(app, service, guarded)
    from mediasearch.serve.text_routes import text_routes

    text_routes(app, service, guarded, errors(400, 404, 422, 503))

    from mediasearch.serve.places_routes import places_routes

    places_routes(app, service, guarded, errors)

    from mediasearch.serve.people_routes import people_routes

    people_routes(app, service, guarded, errors, admin)
    return app


def _operation_id(route: Any) -> str:
    """Each operation is named after its route function (``query``, ``status``): generated clients read well."""
    return str(route.name)


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
