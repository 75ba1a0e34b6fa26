"""The face engine (dlib, models from face-recognition-models) on generated pictures and on the shared
real photos."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from face_media import load_rgb
from PIL import Image

from mediasearch.errors import ModelError
from mediasearch.faces.engine import DESCRIPTOR_FILE, LANDMARKS_FILE, Face, FaceEngine, models_dir


def test_models_are_found_without_importing_their_package() -> None:
    # The package's __init__ imports pkg_resources, which current setuptools no longer has.
    code = (
        "import sys; from mediasearch.faces.engine import models_dir; d = models_dir(); "
        "print(d); print('face_recognition_models' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert (Path(out[0]) / DESCRIPTOR_FILE).is_file() and (Path(out[0]) / LANDMARKS_FILE).is_file()
    assert out[1] == "False"


def test_missing_models_say_how_to_get_them(monkeypatch: pytest.MonkeyPatch) -> None:
    import mediasearch.faces.engine as engine_module

    monkeypatch.setattr(engine_module, "MODELS_PACKAGE", "no_such_face_models_package")
    with pytest.raises(ModelError, match="pip install face-recognition-models"):
        models_dir()


def test_unknown_detector_is_refused() -> None:
    with pytest.raises(ModelError, match="hog, cnn"):
        FaceEngine("yolo")


@pytest.mark.parametrize("size", [(64, 48), (1600, 1200), (300, 3000)])
def test_pictures_without_faces_give_none(engine: FaceEngine, size: tuple[int, int]) -> None:
    rng = np.random.default_rng(7)
    width, height = size
    gradient = np.linspace(0, 255, width, dtype=np.float32)[None, :, None].repeat(height, 0).repeat(3, 2)
    picture = np.clip(gradient + rng.normal(0, 12, gradient.shape), 0, 255).astype(np.uint8)
    assert engine.faces(picture) == []


def test_photos_without_people_show_no_face(truth: dict[str, Any], detected: dict[str, list[Face]]) -> None:
    empty = [name for name, item in truth.items() if item["kind"] == "no_face"]
    clean = [name for name in empty if not detected[name]]
    assert len(empty) >= 5
    assert len(clean) / len(empty) >= 0.95, f"faces found in {sorted(set(empty) - set(clean))}"


def test_faces_of_labelled_photos_are_found(truth: dict[str, Any], detected: dict[str, list[Face]]) -> None:
    labelled = [name for name, item in truth.items() if item["kind"] == "person"]
    found = [name for name in labelled if detected[name]]
    assert len(found) / len(labelled) >= 0.9
    for name, item in truth.items():
        if item["kind"] == "group":
            assert abs(len(detected[name]) - item["faces"]) <= 1, name


def test_faces_come_clearest_first_with_boxes_inside_the_picture(detected: dict[str, list[Face]]) -> None:
    faces = [face for found in detected.values() for face in found]
    assert faces
    for found in detected.values():
        assert [f.quality for f in found] == sorted((f.quality for f in found), reverse=True)
    for face in faces:
        left, top, right, bottom = face.box
        assert 0.0 <= left < right <= 1.0 and 0.0 <= top < bottom <= 1.0
        assert 0.0 < face.quality <= 1.0
        assert face.embedding.shape == (128,) and face.embedding.dtype == np.float32


def test_a_face_keeps_its_descriptor_and_box_at_another_size(
    faces_dir: Path, truth: dict[str, Any], engine: FaceEngine, detected: dict[str, list[Face]]
) -> None:
    # A big photo: faces are looked for on a reduced picture, so the size it comes at hardly matters.
    name = next(
        n
        for n, item in sorted(truth.items())
        if item["kind"] == "person" and detected[n] and max(Image.open(faces_dir / n).size) >= 1200
    )
    picture = load_rgb(faces_dir / name)
    smaller_size = (picture.shape[1] * 4 // 5, picture.shape[0] * 4 // 5)
    half = np.asarray(Image.fromarray(picture).resize(smaller_size))
    original, smaller = detected[name][0], engine.faces(half)[0]
    assert np.linalg.norm(original.embedding - smaller.embedding) < 0.3
    assert np.allclose(original.box, smaller.box, atol=0.03)


def test_two_people_are_further_apart_than_one_person_twice(
    truth: dict[str, Any], detected: dict[str, list[Face]]
) -> None:
    by_person: dict[str, list[np.ndarray]] = {}
    for name, item in truth.items():
        if item["kind"] == "person" and detected[name]:
            by_person.setdefault(item["people"][0], []).append(detected[name][0].embedding)
    same = [np.linalg.norm(a - b) for v in by_person.values() for i, a in enumerate(v) for b in v[i + 1 :]]
    people = sorted(by_person)
    other = [
        np.linalg.norm(a - b)
        for i, p in enumerate(people)
        for q in people[i + 1 :]
        for a in by_person[p]
        for b in by_person[q]
    ]
    assert np.median(same) < 0.45 < np.percentile(other, 5)


@pytest.mark.slow
def test_the_cnn_detector_finds_the_labelled_faces(
    faces_dir: Path, truth: dict[str, Any], detected: dict[str, list[Face]]
) -> None:
    cnn = FaceEngine("cnn")
    names = [n for n, item in sorted(truth.items()) if item["kind"] == "person"][:6]
    for name in names:
        found = cnn.faces(load_rgb(faces_dir / name))
        assert found, name
        if detected[name]:
            assert np.linalg.norm(found[0].embedding - detected[name][0].embedding) < 0.4
