"""The fast paths give the same answers as the plain ones: trimmed text encoding, the cached text
tower of cold queries, bf16 weights, keyframe sampling, the store-writer thread, GPU-style JPEG decoding
(run on the CPU here) and the thread settings."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from mediasearch.clip import loading as model_mod
from mediasearch.clip import onnx_text, text_tower
from mediasearch.clip.loading import load_model
from mediasearch.clip.model import encode_text_tokens, few_threads
from mediasearch.clip.spec import ModelSpec
from mediasearch.index.runner import IndexOptions, index_paths
from mediasearch.lab.shapes import render
from mediasearch.media import gpu_decode
from mediasearch.media.decode import load_image, sample_video
from mediasearch.store.base import PointIn
from mediasearch.store.collections import open_store

TEXTS = ["a red circle", "a photo of a blue star in the evening light", "x", "Café, 3 a.m.!"]


def test_trimmed_text_encoding_equals_open_clip(demo_model: Any) -> None:
    tokens = demo_model.tokenizer(TEXTS)
    with torch.inference_mode():
        full = demo_model.model.encode_text(tokens)
        trimmed = encode_text_tokens(demo_model.model, tokens)
    np.testing.assert_allclose(trimmed.numpy(), full.numpy(), atol=1e-5)


def test_text_tower_cache_matches_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # fp32: precision auto would encode a query's texts on the int8 ONNX copy (test_onnx_text.py)
    loaded = load_model(ModelSpec("demo"), device="cpu", cache_dir=tmp_path, precision="fp32")
    assert {".json", ".safetensors"} <= {p.suffix for p in tmp_path.iterdir()}
    monkeypatch.setattr(onnx_text, "available", lambda: False)  # the torch copy (the ONNX one: test_onnx_text)
    cold = text_tower.load_text_model(loaded.spec, tmp_path)
    assert cold is not None and cold.dim == loaded.dim
    np.testing.assert_allclose(cold.encode_texts(TEXTS), loaded.encode_texts(TEXTS), atol=1e-5)
    from mediasearch.clip.zeroshot import logit_scale

    assert logit_scale(cold) == pytest.approx(logit_scale(loaded), rel=1e-6)
    with pytest.raises(Exception, match="text queries only"):
        cold.encode_images([Image.new("RGB", (8, 8))])


def test_cold_text_query_imports_neither_open_clip_nor_the_image_tower(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    for i, (colour, shape) in enumerate([("red", "circle"), ("blue", "star"), ("green", "square")]):
        render(colour, shape, rng=np.random.default_rng(i), size=(120, 90)).save(lib / f"{colour}_{shape}.jpg")
    home = tmp_path / "home"
    command = [sys.executable, "-m", "mediasearch", "--home", str(home), "--model", "demo", "--device", "cpu"]
    subprocess.run([*command, "index", str(lib), "--json"], check=True, capture_output=True)
    probe = (
        "import sys, json\n"
        "from mediasearch.cli import app\n"
        f"sys.argv = {['mediasearch', *command[3:], 'query', 'a red circle', '--json']!r}\n"
        "try:\n    app()\nexcept SystemExit:\n    pass\n"
        "heavy = ('open_clip', 'torchvision', 'torch._dynamo', 'torch')\n"
        "print(json.dumps(sorted(m for m in heavy if m in sys.modules)),"
        " file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    # with onnxruntime the text tower's ONNX copy runs, and torch is not imported at all
    assert out.stderr.strip().splitlines()[-1] == ("[]" if onnx_text.available() else '["torch"]')
    hits = json.loads(out.stdout)
    assert hits[0]["path"].endswith("red_circle.jpg")


def test_bf16_weights_keep_embeddings_close(tmp_path: Path) -> None:
    fp32 = load_model(ModelSpec("demo"), device="cpu", precision="fp32")
    low = load_model(ModelSpec("demo"), device="cpu", precision="bf16")
    assert low.dtype == torch.bfloat16 and fp32.dtype == torch.float32
    rng = np.random.default_rng(3)
    images = [render(c, s, rng=rng, size=(96, 96)) for c, s in (("red", "star"), ("blue", "circle"))]
    cosines = (fp32.encode_images(images) * low.encode_images(images)).sum(axis=1)
    assert cosines.min() > 0.99
    assert model_mod.bf16_cosine(fp32) > 0.99


def test_bf16_verdict_is_checked_once_and_remembered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(model_mod, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(model_mod, "BF16_MIN_PARAMS", 0)
    monkeypatch.setattr(model_mod, "bf16_cosine", lambda loaded: calls.append(1) or 0.5)
    for _ in range(2):
        loaded = load_model(ModelSpec("demo"), device="cpu", cache_dir=tmp_path)
        assert loaded.dtype == torch.float32  # cosine 0.5 < 0.999: stays fp32
    assert calls == [1]
    assert (tmp_path / model_mod.PRECISION_FILE).is_file()


def test_few_threads_nests_and_restores() -> None:
    before = torch.get_num_threads()
    with few_threads(10):
        assert torch.get_num_threads() == 1
        with few_threads(10):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with few_threads(10_000):
        assert torch.get_num_threads() == before


def test_videos_are_sampled_at_nearby_keyframes_unless_exact(make_video: Callable[..., Path]) -> None:
    # 10 fps, a keyframe every 2 s: every planned time (0, 2.1, 4.2, 6.3) has one within a quarter
    # of the 2.1 s step, so the keyframes stand in for all four.
    path = str(make_video("v.mp4", seconds=8.0, fps=10, gop=20))
    keyed = sample_video(path, interval=2.1)
    exact = sample_video(path, interval=2.1, exact=True)
    assert [f.timestamp for f in keyed.frames] == [0.0, 2.0, 4.0, 6.0]
    assert [f.timestamp for f in exact.frames] == [0.0, 2.1, 4.2, 6.3]
    assert keyed.meta == exact.meta
    # Every 0.5 s: keyframes stand in for 0, 2, 4, 6 only; the others are decoded exactly.
    mixed = sample_video(path, interval=0.5)
    assert [f.timestamp for f in mixed.frames] == [i / 2 for i in range(16)]


def test_writer_thread_error_surfaces_and_nothing_is_counted(
    tmp_path: Path, demo_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    for i in range(5):
        render("red", "circle", rng=np.random.default_rng(i), size=(80, 60)).save(lib / f"{i}.jpg")
    store = open_store(home=tmp_path / "home", collection="media_t", dim=demo_model.dim, create=True)
    written: list[int] = []

    def upsert(points: Sequence[PointIn]) -> None:
        if written:
            raise RuntimeError("disk on fire")
        written.append(len(points))

    monkeypatch.setattr(store, "upsert", upsert)
    with pytest.raises(RuntimeError, match="disk on fire"):
        index_paths([str(lib)], demo_model, store, IndexOptions(batch_size=2, workers=1))
    assert written == [2]
    store.close()


def _jpeg(path: Path, image: Image.Image, orientation: int | None = None) -> Path:
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    image.save(path, quality=95, exif=exif)
    return path


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_gpu_style_jpeg_decoding_matches_the_cpu_path(tmp_path: Path, orientation: int) -> None:
    import open_clip

    picture = render("purple", "star", rng=np.random.default_rng(7), size=(640, 400))
    picture.paste((255, 255, 255), (0, 0, 160, 100))  # a corner marker, to see the orientation
    path = _jpeg(tmp_path / "p.jpg", picture, orientation)
    transform = open_clip.image_transform(224, is_train=False)
    geometry = gpu_decode.geometry_of(transform)
    assert geometry is not None and geometry.resize == 224 and geometry.crop == (224, 224)
    found = gpu_decode.read_jpeg(str(path))
    assert found is not None and found[0].orientation == orientation
    batch, failed = gpu_decode.prepare_batch([found[0]], geometry, "cpu", fallback=None)
    assert failed == {}
    image, meta = load_image(path, target=224)
    assert found[1] == meta
    reference = transform(image)
    assert batch.shape == (1, *reference.shape)
    assert float((batch[0] - reference).abs().mean()) < 0.05


def test_gpu_style_batch_falls_back_and_reports_unreadable_jpegs(tmp_path: Path) -> None:
    import open_clip

    transform = open_clip.image_transform(64, is_train=False)
    geometry = gpu_decode.geometry_of(transform)
    assert geometry is not None
    good = gpu_decode.read_jpeg(str(_jpeg(tmp_path / "a.jpg", Image.new("RGB", (80, 64), (200, 30, 30)))))
    assert good is not None
    broken = gpu_decode.JpegBytes(str(tmp_path / "b.jpg"), b"\xff\xd8\xff\xe0garbage\xff\xd9")
    cpu_tensor = torch.zeros(3, 64, 64)

    def fallback(path: str) -> torch.Tensor:
        from mediasearch.errors import MediaError

        raise MediaError("cannot decode image: garbage")

    batch, failed = gpu_decode.prepare_batch([good[0], broken, cpu_tensor], geometry, "cpu", fallback)
    assert failed == {1: "cannot decode image: garbage"} and batch.shape == (2, 3, 64, 64)
    Image.new("RGB", (8, 8)).save(tmp_path / "c.png")
    assert gpu_decode.read_jpeg(str(tmp_path / "c.png")) is None  # not a JPEG: the CPU path
    truncated = (tmp_path / "a.jpg").read_bytes()[:-100]
    (tmp_path / "d.jpg").write_bytes(truncated)
    assert gpu_decode.read_jpeg(str(tmp_path / "d.jpg")) is None  # no end marker: the CPU path says why
