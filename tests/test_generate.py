"""`generate`: CLIP-guided synthesis raises the prompt's score, and the demo model sees the class in the PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mediasearch.generate import GenerateError, GenerateOptions, generate
from mediasearch.shapes import CLASSES, class_name

# (class, whether the demo model reliably reads the generated shape back); the colour always comes out.
CASES = [("green star", True), ("red circle", False), ("blue square", False)]


def _classify_file(model: Any, path: Path) -> str:
    from mediasearch.evaluate import encode_files
    from mediasearch.zeroshot import ensemble_embeddings, templates_for

    labels = [class_name(c, s) for c, s in CLASSES]
    embs, kept, _ = encode_files(model, [path])  # decoded and preprocessed like any indexed file
    assert kept == [0]
    return labels[int((embs @ ensemble_embeddings(model, labels, templates_for(model)).T).argmax())]


@pytest.mark.parametrize(("label", "shape_reliable"), CASES)
def test_generated_image_scores_and_classifies(
    demo_model: Any, tmp_path: Path, label: str, shape_reliable: bool
) -> None:
    result = generate(demo_model, f"a photo of a {label}", GenerateOptions(steps=40, views=4, lr=0.1))
    assert result.final_score > result.initial_score + 0.3
    path = tmp_path / "out.png"
    result.image.save(path, format="PNG")
    seen = _classify_file(demo_model, path)
    assert seen.split()[0] == label.split()[0]
    if shape_reliable:
        assert seen == label


def test_generate_cli_writes_a_png_and_steers_an_init_image(cli: Any, tmp_path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (64, 64), (128, 128, 128)).save(tmp_path / "grey.png")
    out = tmp_path / "g.png"
    report = cli.json("generate", "a photo of a red square", "--out", str(out), "--steps", "3",
                      "--size", "64", "--init", str(tmp_path / "grey.png"))
    assert Image.open(out).size == (64, 64)
    assert set(report) >= {"initial_score", "final_score", "out"}


def test_generate_refuses_bad_options(demo_model: Any) -> None:
    with pytest.raises(GenerateError, match="steps"):
        generate(demo_model, "a red circle", GenerateOptions(steps=0))
    with pytest.raises(GenerateError, match="--init"):
        generate(demo_model, "a red circle", GenerateOptions(steps=1, init=Path("/nonexistent.png")))
