"""The daemon's people routes: ``GET /people`` (`people --json`), ``POST /people/{id}/name``,
``/people/{id}/hide``, ``/people/merge``, ``/people/remove-face`` and ``GET /people/{id}/face`` (a JPEG of
the person's clearest face, for the page). Like ``api.py``, no ``from __future__ import annotations``:
FastAPI reads the signatures.
"""

import os
from collections.abc import Callable
from typing import Annotated, Any, Protocol


class PeopleServiceLike(Protocol):
    def people(self, hidden: bool = False) -> list[dict[str, Any]]: ...
    def name_person(self, person: str, name: str) -> dict[str, Any]: ...
    def hide_person(self, person: str, hidden: bool) -> dict[str, Any]: ...
    def merge_people(self, keep: str, other: str) -> dict[str, Any]: ...
    def remove_face(self, path: str, face: int | None) -> list[dict[str, Any]]: ...
    def face(self, person: str, size: int) -> bytes: ...


def people_routes(
    app: Any,
    service: Any,
    guarded: list[Any],
    errors: Callable[..., dict[int | str, Any]],
    admin: list[Any] | None = None,
) -> None:
    """Add the people routes to ``app`` (``service``: a ``PeopleServiceLike``; ``errors``: the API's
    documented error answers for some status codes). Listing and faces need the read token (``guarded``);
    naming, hiding, merging and taking a face out change the library and need ``admin``."""
    writes = guarded if admin is None else admin
    from fastapi import Query as Param
    from fastapi.responses import Response
    from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

    from mediasearch.library.people import Person

    people: PeopleServiceLike = service
    person_id = Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[0-9A-Za-z_-]+$")]

    class NameIn(BaseModel):
        model_config = ConfigDict(strict=True)
        name: str = Field(min_length=1, max_length=200, description="the person's name")

    class HideIn(BaseModel):
        model_config = ConfigDict(strict=True)
        hidden: bool = Field(default=True, description="false shows the person again")

    class MergeIn(BaseModel):
        model_config = ConfigDict(strict=True)
        keep: person_id = Field(description="the person who stays")
        other: person_id = Field(description="the person whose faces join `keep`")

    class RemoveFaceIn(BaseModel):
        model_config = ConfigDict(strict=True)
        path: str = Field(min_length=1, max_length=4096, description="an indexed file")
        face: Annotated[int | None, BeforeValidator(_whole)] = Field(
            default=None, ge=0, le=1000, description="its N-th face (0: clearest); all if null"
        )

    tags = ["people"]

    @app.get("/people", dependencies=guarded, response_model=list[Person], responses=errors(503), tags=tags)
    def list_people(hidden: bool = False) -> list[dict[str, Any]]:
        """`people --json`: the people found by their faces, largest first."""
        return people.people(hidden)

    @app.post(
        "/people/{person}/name",
        dependencies=writes,
        response_model=Person,
        responses=errors(400, 403, 404, 413, 422, 503),
        tags=tags,
    )
    def name_person(person: person_id, body: NameIn) -> dict[str, Any]:
        """`people name ID NAME`."""
        return people.name_person(person, body.name)

    @app.post(
        "/people/{person}/hide",
        dependencies=writes,
        response_model=Person,
        responses=errors(400, 403, 404, 413, 422, 503),
        tags=tags,
    )
    def hide_person(person: person_id, body: HideIn) -> dict[str, Any]:
        """`people hide ID` (``hidden: false`` shows the person again)."""
        return people.hide_person(person, body.hidden)

    @app.post(
        "/people/merge",
        dependencies=writes,
        response_model=Person,
        responses=errors(400, 403, 404, 413, 422, 503),
        tags=tags,
    )
    def merge_people(body: MergeIn) -> dict[str, Any]:
        """`people merge KEEP OTHER`."""
        return people.merge_people(body.keep, body.other)

    @app.post(
        "/people/remove-face",
        dependencies=writes,
        response_model=list[Person],
        responses=errors(400, 403, 404, 413, 422, 503),
        tags=tags,
    )
    def remove_face(body: RemoveFaceIn) -> list[dict[str, Any]]:
        """`people remove-face FILE [--face N]`: the faces taken out, each now a person of its own."""
        return people.remove_face(os.path.abspath(body.path), body.face)

    @app.get(
        "/people/{person}/face",
        dependencies=guarded,
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}, "description": "the face"}, **errors(400, 404, 503)},
        tags=tags,
    )
    def face(person: person_id, size: Annotated[int, Param(ge=16, le=512)] = 96) -> Response:
        """A JPEG of the person's clearest face, ``size`` pixels square."""
        return Response(people.face(person, size), media_type="image/jpeg", headers={"Cache-Control": "no-cache"})


def _whole(value: Any) -> Any:
    """A whole number written as a float (``3.0``) is an integer in JSON Schema: take it as one."""
    return int(value) if isinstance(value, float) and value.is_integer() else value
