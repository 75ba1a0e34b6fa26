"""The daemon's ``POST /text``: what is written in a picture or a video's frames (``text --json``).

No ``from __future__ import annotations``: FastAPI reads the route's body model from its annotation.
"""

import os
from typing import Any, Protocol


class TextService(Protocol):
    def text(self, path: str) -> dict[str, Any]: ...


def text_routes(app: Any, service: TextService, guarded: list[Any], responses: dict[int | str, Any]) -> None:
    """``POST /text {"path"}``: the file's lines (from the index once its OCR is done, else read now)."""
    from pydantic import BaseModel, ConfigDict, Field

    class TextIn(BaseModel):
        model_config = ConfigDict(strict=True, extra="forbid")

        path: str = Field(min_length=1, max_length=4096, description="a picture or a video")

    class LineOut(BaseModel):
        text: str
        conf: float
        box: list[float] = Field(description="left, top, right, bottom, in [0, 1] of the picture")
        timestamp: float | None = Field(description="seconds into a video; null for a picture")

    class FileTextOut(BaseModel):
        path: str
        kind: str
        source: str = Field(description='"index" (the OCR pass stored it) or "read" (read now)')
        lines: list[LineOut]

    @app.post("/text", dependencies=guarded, response_model=FileTextOut, responses=responses, tags=["search"])
    def text(body: TextIn) -> dict[str, Any]:
        """`text --json` for one file: recognised lines with confidence, box and time."""
        return service.text(os.path.abspath(body.path))
