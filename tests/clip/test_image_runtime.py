"""The image tower's runtime on a CPU (clip/image_runtime.py): measured once per model and machine, the
fastest faithful candidate picked, unfaithful ones refused, the verdict kept and reused, and what it picks
embeds like torch float32 end to end."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mediasearch.clip import image_runtime as runtimes
from mediasearch.clip.loading import load_model
from mediasearch.clip.spec import ModelSpec
from mediasearch.errors import ConfigError

pytestmark = pytest.mark.skipif(not runtimes.available_runtimes(), reason="neither openvino nor onnxruntime+onnx")


@pytest.fixture
def xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user cache of the test's own: verdicts start empty."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "mediasearch" / runtimes.FOLDER


def _load(tmp_path: Path, want: str = "auto") -> Any:
    return load_model(ModelSpec("demo"), device="cpu", cache_dir=tmp_path / "models", image_runtime=want)


def _measurements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A record of every measurement (the real one runs)."""
    calls: list[str] = []
    real = runtimes._measure_into

    def counted(loaded: Any, folder: Path, want: str, threads: int, torch_bf16: bool) -> Any:
        calls.append(want)
        return real(loaded, folder, want, threads, torch_bf16)

    monkeypatch.setattr(runtimes, "_measure_into", counted)
    return calls


def test_auto_picks_the_fastest_faithful_candidate_once(
    tmp_path: Path, xdg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _measurements(monkeypatch)
    model = _load(tmp_path)
    verdict = runtimes.verdict_of(model, tmp_path / "models")
    assert verdict is not None and calls == ["auto"]
    assert "torch fp32" in verdict.rates and set(verdict.rates) == set(verdict.cosines)
    assert len(verdict.rates) >= 2  # torch and at least one other runtime were measured
    faithful = {n: r for n, r in verdict.rates.items() if verdict.cosines[n] >= runtimes.MIN_COSINE}
    assert verdict.name == max(faithful, key=faithful.__getitem__)
    assert model.image_runtime == verdict.name or (verdict.runtime == "torch" and model.fast_image is None)
    assert verdict.flops > 0 and verdict.threads == torch.get_num_threads()
    # A second load, in another home, reads the verdict: nothing is measured again.
    again = _load(tmp_path / "other")
    assert calls == ["auto"] and again.image_runtime == model.image_runtime
    kept = [p.name for p in next(xdg.iterdir()).iterdir()]
    assert "verdict.json" in kept and all(n == "verdict.json" or n.startswith("tower.") for n in kept)


@pytest.mark.parametrize("runtime", runtimes.available_runtimes())
def test_each_runtime_embeds_like_torch(
    tmp_path: Path, xdg: Path, runtime: str, make_image: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asked for by name, a runtime runs when faithful (the demo model is), and its embeddings of real
    images, through ``encode_images``, match the torch model's."""
    monkeypatch.setattr(runtimes, "PROBE_RUNS", 1)
    fast, plain = _load(tmp_path, runtime), _load(tmp_path, "torch")
    verdict = runtimes.verdict_of(fast, tmp_path / "models", want=runtime)
    assert verdict is not None and set(verdict.rates) <= {
        "torch fp32",
        "torch bf16",
        f"{runtime} fp32",
        f"{runtime} bf16",
    }
    if verdict.runtime != runtime:  # torch measured faster than this runtime here: nothing to compare
        assert fast.fast_image is None
        return
    assert fast.image_runtime.startswith(runtime) and plain.image_runtime.startswith("torch")
    from PIL import Image

    colours = [(220, 30, 30), (40, 170, 60), (40, 70, 220), (240, 220, 40), (140, 50, 170)]
    images = [Image.open(make_image(f"{i}.jpg", size=(160, 120), color=c, marker=True)) for i, c in enumerate(colours)]
    got, want = fast.encode_images(images), plain.encode_images(images)
    assert got.shape == want.shape and np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    assert float((got * want).sum(axis=1).min()) >= runtimes.MIN_COSINE


def test_an_unfaithful_runtime_is_refused_however_fast(
    tmp_path: Path, xdg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The exported tower has its weights disturbed (an exporter that got something wrong): it
    runs, really, but its embeddings are not the model's, so torch stays, and the cosines say why."""
    real = runtimes._export_onnx

    def disturbed(visual: Any, example: Any, path: Path) -> None:
        wrong = copy.deepcopy(visual)
        with torch.no_grad():
            for param in wrong.parameters():
                param.add_(0.5 * param.std().nan_to_num(0.1) * torch.randn_like(param))
        real(wrong, example, path)

    monkeypatch.setattr(runtimes, "_export_onnx", disturbed)
    model = _load(tmp_path)
    verdict = runtimes.verdict_of(model, tmp_path / "models")
    assert verdict is not None and verdict.runtime == "torch" and model.fast_image is None
    others = {n: c for n, c in verdict.cosines.items() if not n.startswith("torch")}
    assert others and all(c < runtimes.MIN_COSINE for c in others.values()), verdict.cosines
    assert [p.name for p in next(xdg.iterdir()).iterdir()] == ["verdict.json"]  # no tower kept for torch


def test_a_lost_tower_is_measured_again(tmp_path: Path, xdg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _measurements(monkeypatch)
    model = _load(tmp_path)
    if model.fast_image is None:
        pytest.skip("torch was measured fastest here: there is no converted tower to lose")
    model.fast_image.artifact.unlink()
    again = _load(tmp_path)
    assert calls == ["auto", "auto"] and again.fast_image is not None and again.fast_image.artifact.is_file()


def test_other_weights_are_another_measurement(tmp_path: Path, xdg: Path) -> None:
    """A fine-tuned model is not the model the verdict was measured on: its own key, its own verdict,
    and a copy whose weights are not the converted ones encodes with torch."""
    model = _load(tmp_path)
    tuned = copy.deepcopy(model.model)
    with torch.no_grad():
        next(tuned.visual.parameters()).mul_(1.01)
    copy_of = dataclasses.replace(model, model=tuned)
    assert runtimes._key(copy_of, 2, "auto") != runtimes._key(model, 2, "auto")
    assert copy_of.image_runtime.startswith("torch")
    pixels = runtimes.probe_images(model.image_size, 3)
    with torch.inference_mode():
        want = tuned.encode_image(pixels).numpy()
    got = copy_of.encode_tensors(pixels)
    assert runtimes.lowest_cosine(want, got) > 0.99999


def test_the_setting_is_checked_and_torch_skips_the_measurement(
    tmp_path: Path, xdg: Path, monkeypatch: pytest.MonkeyPatch, demo_settings: Any
) -> None:
    calls = _measurements(monkeypatch)
    assert _load(tmp_path, "torch").fast_image is None and calls == []
    assert not xdg.exists() or not any(xdg.iterdir())
    with pytest.raises(ConfigError, match="image runtime must be one of"):
        demo_settings(image_runtime="tensorrt")
    monkeypatch.setenv("MEDIASEARCH_IMAGE_RUNTIME", "openvino")
    from mediasearch.settings import load_settings

    assert load_settings({"home": tmp_path / "h"}).image_runtime == "openvino"


def test_index_on_the_picked_runtime_finds_what_torch_finds(
    tmp_path: Path, xdg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole path: ``index`` in two homes, one on the measured runtime, one on torch; the vectors
    agree to MIN_COSINE and a query ranks the same files first."""
    from fault_helpers import store_state

    from mediasearch.lab.shapes import make_library
    from mediasearch.library import Library

    make_library(tmp_path / "lib", 24, seed=5)
    found, vectors = {}, {}
    for runtime in ("auto", "torch"):
        monkeypatch.setenv("MEDIASEARCH_IMAGE_RUNTIME", runtime)
        with Library.open(tmp_path / runtime, model="demo", device="cpu", use_daemon=False) as library:
            library.index([tmp_path / "lib"])
            found[runtime] = [h.path for h in library.query("a red circle", limit=5)]
        vectors[runtime] = {p["path"]: v for p, v in store_state(tmp_path / runtime).values()}
    auto, plain = vectors["auto"], vectors["torch"]
    assert set(auto) == set(plain) and len(auto) == 24
    lowest = min(float(np.dot(auto[p], plain[p]) / np.linalg.norm(auto[p]) / np.linalg.norm(plain[p])) for p in auto)
    assert lowest >= runtimes.MIN_COSINE
    assert found["auto"][:3] == found["torch"][:3]


finite = st.floats(-1e3, 1e3, allow_nan=False, width=32).filter(lambda v: abs(v) > 1e-3)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 5), st.integers(2, 8)), elements=finite), st.floats(0.1, 10))
def test_lowest_cosine(rows: np.ndarray, scale: float) -> None:
    """A row against itself scaled is cosine 1, against its negation -1; another shape or a NaN is 0:
    a broken runtime can never pass the gate."""
    assert runtimes.lowest_cosine(rows, rows * scale) == pytest.approx(1.0, abs=1e-6)
    assert runtimes.lowest_cosine(rows, -rows) == pytest.approx(-1.0, abs=1e-6)
    assert runtimes.lowest_cosine(rows, rows[:, :-1]) == 0.0
    broken = rows.copy()
    broken[0, 0] = np.nan
    assert runtimes.lowest_cosine(rows, broken) == 0.0


def test_verdict_round_trips_through_json() -> None:
    verdict = runtimes.Verdict("openvino", "bf16", {"torch fp32": 1.0}, {"torch fp32": 1.0}, 8.8e9, 2, "cpu [avx2]")
    assert runtimes.Verdict.from_json(json.loads(json.dumps(dataclasses.asdict(verdict)))) == verdict
