"""Fixtures for faces: the shared real photos (skipped when ``../shared`` is absent) and the faces
the real engine finds in them, computed once per session (~20 s on one core)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from face_media import load_rgb

from mediasearch.faces.engine import Face, FaceEngine

SHARED_FACES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "faces"


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    """The shared real face photos; the test is skipped where they are absent (a user's clone)."""
    if not (SHARED_FACES / "truth.json").is_file():
        pytest.skip(f"the shared face photos are absent ({SHARED_FACES})")
    return SHARED_FACES


@pytest.fixture(scope="session")
def truth(faces_dir: Path) -> dict[str, dict[str, Any]]:
    """truth.json's files: name -> {"people", "kind", ...}."""
    return dict(json.loads((faces_dir / "truth.json").read_text(encoding="utf-8"))["files"])


@pytest.fixture(scope="session")
def engine() -> FaceEngine:
    return FaceEngine()


@pytest.fixture(scope="session")
def detected(faces_dir: Path, truth: dict[str, dict[str, Any]], engine: FaceEngine) -> dict[str, list[Face]]:
    """The faces found in every shared photo, by file name."""
    return {name: engine.faces(load_rgb(faces_dir / name)) for name in sorted(truth)}
