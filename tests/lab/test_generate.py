"""`generate`: CLIP-guided synthesis raises the prompt's score, and the demo model sees the class in the PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mediasearch.lab.generate import GenerateError, GenerateOptions, generate
from mediasearch.lab.shapes import CLASSES, class_name

# The three classes: the demo model must read each generated image back as that class.
CASES = ["red circle", "green star", "blue square"]


def _classify_file(model: Any, path: Path) -> str:
    from mediasearch.clip.zeroshot import ensemble_embeddings, templates_for
    from mediasearch.search.query import encode_files

    labels = [class_name(c, s) for c, s in CLASSES]
    embs, kept, _ = encode_files(model, [path])  # decoded and preprocessed like any indexed file
    assert kept == [0]
    return labels[int((embs @ ensemble_embeddings(model, labels, templates_for(model)).T).argmax())]


@pytest.mark.parametrize("label", CASES)
def test_generated_image_scores_and_classifies(demo_model: Any, tmp_path: Path, label: str) -> None:
    seen_steps: list[int] = []
    result = generate(demo_model, f"a photo of a {label}", GenerateOptions(steps=40, views=4, lr=0.1),
                      progress=lambda done, total, score: seen_steps.append(done))
    assert result.final_score > result.initial_score + 0.3
    path = tmp_path / "out.png"
    result.image.save(path, format="PNG")
    assert _classify_file(demo_model, path) == label
    assert seen_steps == list(range(1, 4 * 10 + 30 + 1))  # 4 starts explored for 10 steps, the best for 30 more


def test_the_result_is_the_best_image_seen(demo_model: Any) -> None:
    """With one start the result is its best iterate: its plain score is what the file would score."""
    import numpy as np
    import torch

    from mediasearch.lab.generate import _scorer

    result = generate(demo_model, "a photo of a red circle", GenerateOptions(steps=12, views=2, restarts=1))
    pixels = torch.from_numpy(np.asarray(result.image, np.float32) / 255.0).permute(2, 0, 1)[None]
    with torch.no_grad():
        rescored = float(_scorer(demo_model, "a photo of a red circle")(pixels)[0])
    assert rescored == pytest.approx(result.final_score, abs=0.02)  # 8-bit rounding of the PNG's pixels
    assert result.final_score >= result.initial_score


def test_generate_cli_writes_a_png_and_steers_an_init_image(cli: Any, tmp_path: Path) -> None:
    """The run starts from the init image: a red square to begin with scores far above a grey one for
    "a red square"; from grey, the steps move the picture toward the text."""
    import numpy as np
    from PIL import Image

    from mediasearch.lab.shapes import render, save_image

    prompt = "a photo of a red square"
    Image.new("RGB", (64, 64), (128, 128, 128)).save(tmp_path / "grey.png")
    save_image(render("red", "square", rng=np.random.default_rng(0), size=(64, 64)), tmp_path / "red.png", "png")
    reports = {}
    for name in ("grey", "red"):
        out = tmp_path / f"{name}_out.png"
        reports[name] = cli.json("generate", prompt, "--out", str(out), "--steps", "3",
                                 "--size", "64", "--init", str(tmp_path / f"{name}.png"))
        assert Image.open(out).size == (64, 64)
    assert reports["red"]["initial_score"] > reports["grey"]["initial_score"] + 0.2
    assert reports["grey"]["final_score"] > reports["grey"]["initial_score"]
    moved = np.asarray(Image.open(tmp_path / "grey_out.png").convert("RGB"), np.float32)
    assert np.abs(moved - 128).mean() > 1


def test_generate_refuses_bad_options(demo_model: Any) -> None:
    with pytest.raises(GenerateError, match="steps"):
        generate(demo_model, "a red circle", GenerateOptions(steps=0))
    with pytest.raises(GenerateError, match="--init"):
        generate(demo_model, "a red circle", GenerateOptions(steps=1, init=Path("/nonexistent.png")))
