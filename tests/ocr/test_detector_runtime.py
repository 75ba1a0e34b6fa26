"""Where the text detector runs: OpenVINO bf16 on a CPU with native bf16, else onnxruntime fp32, and
both find the same words (rendered pictures; the shared real photos when ``../shared`` is there)."""

from __future__ import annotations

import importlib.util

import pytest

from mediasearch.lab import textpics
from mediasearch.ocr import engine as engine_mod
from mediasearch.ocr.engine import DETECTOR_ENV, OcrEngine, detector_runtime
from mediasearch.ocr.text import words

needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is not installed")


def _found(engine: OcrEngine, picture: object) -> set[str]:
    return {w for line in engine.read(picture) for w in words(line.text)}  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("bf16", "env", "expected"),
    [
        (True, None, "openvino bf16"),
        (False, None, "onnxruntime"),
        (True, "onnxruntime", "onnxruntime"),
        (True, " OnnxRuntime ", "onnxruntime"),
    ],
)
@needs_openvino
def test_the_runtime_follows_the_cpu_and_the_setting(
    monkeypatch: pytest.MonkeyPatch, bf16: bool, env: str | None, expected: str
) -> None:
    import mediasearch.cpuinfo

    monkeypatch.setattr(mediasearch.cpuinfo, "cpu_has_native_bf16", lambda: bf16)
    if env is None:
        monkeypatch.delenv(DETECTOR_ENV, raising=False)
    else:
        monkeypatch.setenv(DETECTOR_ENV, env)
    assert detector_runtime() == expected


def test_an_unknown_runtime_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown OCR detector runtime 'tensorrt'"):
        OcrEngine(detector="tensorrt")


def test_an_avx2_cap_means_no_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")
    monkeypatch.delenv(DETECTOR_ENV, raising=False)
    assert detector_runtime() == "onnxruntime"


@needs_openvino
def test_openvino_bf16_reads_the_rendered_words_onnxruntime_reads() -> None:
    """Every rendered picture (fonts, sizes, rotations, both polarities, a screenshot, a receipt): the
    same words, and each picture's words found by both."""
    ours, shipped = OcrEngine(detector="openvino bf16"), OcrEngine(detector="onnxruntime")
    assert ours._parts.det.infer is not shipped._parts.det.infer
    assert isinstance(ours._parts.det.infer, engine_mod._OpenVinoDetector)
    total = agree = 0
    for picture in textpics.suite():
        a, b = _found(ours, picture.image), _found(shipped, picture.image)
        for word in picture.words:
            total += 1
            agree += (word in a) == (word in b) and word in a
    assert total >= 70
    assert agree / total >= 0.97


@needs_openvino
def test_openvino_bf16_finds_no_text_where_there_is_none() -> None:
    import random

    engine = OcrEngine(detector="openvino bf16")
    for seed in range(4):
        blank = textpics.background((1200, 900), random.Random(seed), dark=seed % 2 == 0)
        assert engine.read(blank) == []
