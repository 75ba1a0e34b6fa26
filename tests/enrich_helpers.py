"""Stand-ins for the faces and OCR computations of the enrichment pass, run in its worker processes:
they find nothing on a normal file, and fail, hang or crash on the files whose names say so."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any


def _trouble(path: str) -> None:
    name = Path(path).name
    if "hang" in name:
        time.sleep(3600)
    if "crash" in name:
        os._exit(3)
    if "broken" in name:
        raise ValueError("this picture breaks the engine")


def faces_or_trouble(path: str, *, frames: list[Any], detector: str = "hog") -> list[list[Any]]:
    _trouble(path)
    return [[] for _ in frames]


def lines_or_trouble(path: str, *, frames: list[tuple[str, Any]], threads: int = 1) -> list[tuple[str, list[Any]]]:
    _trouble(path)
    return [(key, []) for key, _ in frames]
