"""The daemon's ``/places`` route: the cities where the library's geotagged files were taken."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel


class PlaceCount(BaseModel):
    """A city where indexed files were taken, its region and country, and how many files."""

    city: str
    region: str
    country: str
    files: int


def places_routes(
    app: Any, service: Any, guarded: list[Any], errors: Callable[..., dict[int | str, dict[str, Any]]]
) -> None:
    """Add ``GET /places`` to the app."""

    @app.get("/places", dependencies=guarded, response_model=list[PlaceCount], responses=errors(503), tags=["search"])
    def places() -> list[dict[str, Any]]:
        """The cities of the geotagged files (with region and country), most files first."""
        return list(service.places())
