"""The model layer: shapes, dtypes and normalisation; the offline-weights error; the demo model's skill."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mediasearch.clip.loading import load_model
from mediasearch.clip.spec import DEMO_DIR, ModelSpec
from mediasearch.errors import ModelError, WeightsUnavailableError
from mediasearch.lab.shapes import CLASSES, class_name, render


def test_encoders_return_normalised_float32(demo_model: Any) -> None:
    rng = np.random.default_rng(0)
    images = [render(c, s, rng=rng, size=(120, 90)) for c, s in CLASSES[:5]]
    embs = demo_model.encode_images(images)
    texts = demo_model.encode_texts(["a red circle", "a blue star", "a red circle"])
    assert embs.shape == (5, demo_model.dim) and embs.dtype == np.float32
    assert texts.shape == (3, demo_model.dim) and texts.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embs, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(texts[0], texts[2])
    assert demo_model.encode_images([]).shape == (0, demo_model.dim)
    assert demo_model.encode_texts([]).shape == (0, demo_model.dim)


def test_batching_does_not_change_embeddings(demo_model: Any) -> None:
    rng = np.random.default_rng(1)
    images = [render(c, s, rng=rng, size=(100, 100)) for c, s in CLASSES[:7]]
    old = demo_model.batch_size
    try:
        demo_model.batch_size = 3
        small = demo_model.encode_images(images)
    finally:
        demo_model.batch_size = old
    np.testing.assert_allclose(small, demo_model.encode_images(images), atol=1e-5)


def test_offline_weights_error_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailableError) as err:
        load_model(ModelSpec("ViT-B-32", "laion2b_s34b_b79k"), device="cpu", cache_dir=tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert "could not download weights" in message and "--pretrained FILE" in message


def test_missing_weights_file_and_unknown_model(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailableError, match="weights file not found"):
        load_model(ModelSpec("ViT-B-32", str(tmp_path / "nope.safetensors")), device="cpu")
    with pytest.raises(ModelError, match="unknown model"):
        load_model(ModelSpec("ViT-Nonexistent-9"), device="cpu")


def test_local_weights_file_is_loaded_and_keyed_by_content(tmp_path: Path) -> None:
    """A model given as name + local file loads those weights; the index key follows the file's bytes."""
    import open_clip
    import torch

    demo_cfg = DEMO_DIR / "open_clip_config.json"
    model_dir = tmp_path / "weights"
    model_dir.mkdir()
    (model_dir / "open_clip_config.json").write_text(demo_cfg.read_text())
    base = open_clip.create_model(f"local-dir:{model_dir}")  # random weights: no checkpoint in the folder
    torch.save(base.state_dict(), model_dir / "open_clip_pytorch_model.bin")
    spec = ModelSpec(f"local-dir:{model_dir}")
    ours = load_model(spec, device="cpu")
    x = torch.zeros(1, 3, ours.image_size, ours.image_size)
    with torch.inference_mode():
        expected = torch.nn.functional.normalize(base.eval().encode_image(x), dim=-1).numpy()
    np.testing.assert_allclose(ours.encode_tensors(x), expected, atol=1e-5)
    key = spec.key()
    with torch.no_grad():
        next(base.parameters()).add_(1.0)
    torch.save(base.state_dict(), model_dir / "open_clip_pytorch_model.bin")
    assert spec.key() != key  # other weights, other index
    assert ModelSpec("demo").key() != ModelSpec("ViT-B-32", "openai").key()


def test_embed_matches_open_clip_directly(tmp_path: Path, demo_model: Any) -> None:
    """`embed` on a large JPEG (decoded in draft mode) vs open_clip's own load-and-preprocess."""
    import open_clip
    import torch

    from mediasearch.search.query import file_vector

    img = render("purple", "star", rng=np.random.default_rng(5), size=(1600, 1200))
    path = tmp_path / "big.jpg"
    img.save(path, quality=92)
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{DEMO_DIR}")
    with torch.inference_mode():
        ref = model.eval().encode_image(preprocess(Image.open(path).convert("RGB")).unsqueeze(0))
    ref = torch.nn.functional.normalize(ref, dim=-1)[0].numpy()
    ours = file_vector(demo_model, str(path))
    assert float(ours @ ref) >= 0.99


def test_demo_model_knows_the_shapes(demo_model: Any, tmp_path: Path) -> None:
    """Zero-shot on freshly rendered files it never saw: top-1 and per-query top-5 precision."""
    from mediasearch.clip.zeroshot import classify_embeddings, ensemble_embeddings, logit_scale, templates_for
    from mediasearch.lab.shapes import make_library

    files = make_library(tmp_path / "fresh", 120, seed=987654)
    from mediasearch.media.decode import load_image

    images = [load_image(str(p), target=demo_model.image_size)[0] for p, _, _ in files]
    embs = demo_model.encode_images(images)
    names = [class_name(c, s) for c, s in CLASSES]
    truth = [class_name(c, s) for _, c, s in files]
    preds = classify_embeddings(
        embs,
        ensemble_embeddings(demo_model, names, templates_for(demo_model)),
        names,
        logit_scale(demo_model),
    )
    accuracy = np.mean([p[0].label == t for p, t in zip(preds, truth, strict=True)])
    assert accuracy >= 0.92, accuracy
    queries = demo_model.encode_texts([f"a photo of a {n}" for n in names])
    good = 0
    for q, name in zip(queries, names, strict=True):
        top5 = np.argsort(-(embs @ q))[:5]
        good += sum(truth[i] == name for i in top5) >= 4
    assert good >= 22, f"{good} of 24 queries had >= 4 of 5 right"


def test_help_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from typer.testing import CliRunner; from mediasearch.cli import app;"
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output;"
        "heavy = ('torch', 'open_clip', 'qdrant_client', 'qdrant_edge', 'decord');"
        "print([m for m in heavy if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=os.environ, check=True
    )
    assert out.stdout.strip() == "[]"
