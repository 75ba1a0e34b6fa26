"""The daemon's ``POST /text``: what is written in a picture or a video's frames (``text --json``).

No ``from __future__ import annotations``: FastAPI reads the route's signature (its models are in
``schemas.py``, at module level, where it can resolve them)."""

import os
from typing import Any, Protocol


class TextService(Protocol):
    def text(self, path: str) -> dict[str, Any]: ...


def text_routes(app: Any, service: TextService, guarded: list[Any], responses: dict[int | str, Any]) -> None:
    """``POST /text {"path"}``: the file's lines (from the index once its OCR is done, else read now)."""
    from mediasearch.serve.schemas import FileTextOut, TextIn

    @app.post("/text", dependencies=guarded, response_model=FileTextOut, responses=responses, tags=["search"])
    def text(body: TextIn) -> dict[str, Any]:
        """`text --json` for one file: recognised lines with confidence, box and time."""
        return service.text(os.path.abspath(body.path))
