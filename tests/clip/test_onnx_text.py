"""The ONNX copy of the text tower (cold queries without torch): its tokenizer, its embeddings against
the model's, the int8 verdict, and the fallback to the torch copy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mediasearch.clip import onnx_text, text_tower
from mediasearch.clip.bpe import BpeTokenizer
from mediasearch.clip.loading import load_model
from mediasearch.clip.spec import ModelSpec
from mediasearch.clip.zeroshot import CLIP_TEMPLATES, ensemble_embeddings

TEXTS = ["a red circle", "A Café's  NEON sign, at 3 a.m.!", "naïve 東京 🐕 &amp; 12345 don't", "", "x " * 100,
         "<start_of_text> hi <end_of_text>", "itap of a photo of the small blue star."]


def test_bpe_tokenizer_equals_open_clips() -> None:
    from open_clip.tokenizer import SimpleTokenizer

    ours = BpeTokenizer()(TEXTS)
    assert ours.dtype == np.int64 and ours.shape == (len(TEXTS), 77)
    np.testing.assert_array_equal(ours, SimpleTokenizer()(TEXTS).numpy())


def _cold(tmp_path: Path) -> tuple[Any, Any, dict[str, Any]]:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    loaded = load_model(ModelSpec("demo"), device="cpu", cache_dir=tmp_path, precision="fp32")
    weights, _ = text_tower.cache_paths(tmp_path, loaded.spec.key())
    desc = json.loads(onnx_text.paths(weights)[2].read_text())
    return loaded, text_tower.load_text_model(loaded.spec, tmp_path), desc


def test_onnx_text_tower_matches_the_model(tmp_path: Path) -> None:
    loaded, cold, desc = _cold(tmp_path)
    assert isinstance(cold, onnx_text.OnnxTextModel) and cold.dim == loaded.dim
    texts = [t.format(label) for label in ("a red circle", "a photo of a blue star") for t in CLIP_TEMPLATES]
    cosines = (cold.encode_texts(texts) * loaded.encode_texts(texts)).sum(axis=1)
    floor = onnx_text.INT8_MIN_COSINE if desc["int8"] else onnx_text.FP32_MIN_COSINE
    assert cosines.min() >= floor - 1e-4, (desc, cosines.min())
    ours = ensemble_embeddings(cold, ["a red circle"], CLIP_TEMPLATES)
    assert float((ours @ ensemble_embeddings(loaded, ["a red circle"], CLIP_TEMPLATES).T)[0, 0]) >= floor - 1e-4
    from mediasearch.clip.zeroshot import logit_scale

    assert logit_scale(cold) == pytest.approx(logit_scale(loaded), rel=1e-6)
    with pytest.raises(Exception, match="text queries only"):
        cold.encode_images([])


def test_int8_is_kept_only_when_close_enough(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnx_text, "INT8_MIN_COSINE", 1.01)  # no int8 graph can pass this
    loaded, cold, desc = _cold(tmp_path)
    assert desc["int8"] is False and desc["int8_cosine"] < 1.01
    assert isinstance(cold, onnx_text.OnnxTextModel) and cold.model.int8 is False
    cosines = (cold.encode_texts(TEXTS[:3]) * loaded.encode_texts(TEXTS[:3])).sum(axis=1)
    assert cosines.min() >= onnx_text.FP32_MIN_COSINE


def test_the_verdict_is_remembered_and_the_export_not_repeated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded, _, first = _cold(tmp_path)
    monkeypatch.setattr(onnx_text, "_export_checked", lambda *a: pytest.fail("exported again"))
    load_model(ModelSpec("demo"), device="cpu", cache_dir=tmp_path, precision="fp32")
    weights, _ = text_tower.cache_paths(tmp_path, loaded.spec.key())
    assert json.loads(onnx_text.paths(weights)[2].read_text()) == first


def test_without_onnxruntime_the_torch_copy_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded, _, _ = _cold(tmp_path)
    monkeypatch.setattr(onnx_text, "available", lambda: False)
    cold = text_tower.load_text_model(loaded.spec, tmp_path)
    assert isinstance(cold, text_tower.TextModel)


def test_a_damaged_graph_falls_back_to_the_torch_copy(tmp_path: Path) -> None:
    loaded, _, _ = _cold(tmp_path)
    weights, _ = text_tower.cache_paths(tmp_path, loaded.spec.key())
    onnx_text.paths(weights)[0].write_bytes(b"not a graph")
    assert isinstance(text_tower.load_text_model(loaded.spec, tmp_path), text_tower.TextModel)


def test_a_loaded_cpu_model_encodes_query_texts_with_the_int8_tower(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    fast = load_model(ModelSpec("demo"), device="cpu", cache_dir=tmp_path)
    weights, _ = text_tower.cache_paths(tmp_path, fast.spec.key())
    if not json.loads(onnx_text.paths(weights)[2].read_text())["int8"]:
        pytest.skip("the demo model's int8 text tower did not pass its cosine check here")
    plain = load_model(ModelSpec("demo"), device="cpu", cache_dir=tmp_path, precision="fp32")
    assert fast.fast_text is not None and plain.fast_text is None  # an explicit precision keeps its own
    texts = [t.format("a blue star") for t in CLIP_TEMPLATES]
    cosines = (fast.encode_texts(texts) * plain.encode_texts(texts)).sum(axis=1)
    assert cosines.min() >= onnx_text.INT8_MIN_COSINE
    many = [f"a photo of a red circle number {i}" for i in range(100)]  # a vocabulary: the torch tower
    np.testing.assert_allclose(fast.encode_texts(many), plain.encode_texts(many), atol=1e-5)
    import copy
    import dataclasses

    tuned = copy.deepcopy(fast.model)  # other weights (as finetune's models): never the cached graph
    with torch.no_grad():
        tuned.token_embedding.weight.mul_(-1)
    other = dataclasses.replace(fast, model=tuned, _text_cache={})
    assert (other.encode_texts(texts[:1]) * fast.encode_texts(texts[:1])).sum() < 0.99


def test_without_an_int8_verdict_queries_use_the_torch_tower(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    monkeypatch.setattr(onnx_text, "INT8_MIN_COSINE", 1.01)
    assert load_model(ModelSpec("demo"), device="cpu", cache_dir=tmp_path).fast_text is None


def test_a_failing_export_never_fails_loading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")

    def broken(*args: Any) -> None:
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(onnx_text, "_export_checked", broken)
    loaded = load_model(ModelSpec("demo"), device="cpu", cache_dir=tmp_path)
    assert loaded.fast_text is None
    weights, _ = text_tower.cache_paths(tmp_path, loaded.spec.key())
    assert json.loads(onnx_text.paths(weights)[2].read_text())["unusable"]
    assert isinstance(text_tower.load_text_model(loaded.spec, tmp_path), text_tower.TextModel)


class _Spy:
    """A session that records which one ran."""

    def __init__(self, session: Any, name: str, log: list[str]) -> None:
        self.session, self.name, self.log = session, name, log

    def run(self, *args: Any) -> Any:
        self.log.append(self.name)
        return self.session.run(*args)


def _two_session_tower(tmp_path: Path) -> tuple[Any, Any]:
    """The demo model loaded on the CPU and its cached int8 text tower with two sessions: one thread
    and two (2 even on a 1-CPU machine); skips where onnxruntime/onnx are missing or int8 was refused."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    fast = load_model(ModelSpec("demo"), device="cpu", cache_dir=tmp_path)
    if fast.fast_text is None:
        pytest.skip("the demo model's int8 text tower did not pass its cosine check here")
    weights, _ = text_tower.cache_paths(tmp_path, fast.spec.key())
    loaded = onnx_text.load_onnx_text_model(fast.spec, weights, threads=1, wide=2)
    assert loaded is not None and loaded.model.wide_session is not None
    return fast, loaded.model


def test_query_texts_use_all_cores_only_while_the_lane_is_idle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses
    import threading

    from mediasearch import lane

    fast, tower = _two_session_tower(tmp_path)
    tokens = BpeTokenizer()([t.format("a blue star") for t in CLIP_TEMPLATES])
    np.testing.assert_allclose(tower.wide(tokens), tower(tokens), atol=1e-6)  # the same numbers
    log: list[str] = []
    spied = dataclasses.replace(tower, session=_Spy(tower.session, "one", log),
                                wide_session=_Spy(tower.wide_session, "all", log),
                                cost={"one": 1.0, "all": 2.0})  # one thread has been the faster lately
    fast.fast_text = spied
    fast.encode_texts(["no lane: the caller's thread"])
    spare = [1, 0]  # the machine's other cores: free for the first text on the lane, then taken
    monkeypatch.setattr(lane, "spare_cpus", lambda: spare.pop(0) if spare else 1)
    started, release, stop = threading.Event(), threading.Event(), threading.Event()

    def batch() -> None:
        started.set()
        release.wait(10)

    def client() -> None:
        try:
            fast.encode_texts(["an idle lane"])
            fast.encode_texts(["an idle lane, other processes on every other core"])
            other = threading.Thread(target=lambda: lane.run(batch))
            other.start()
            started.wait(10)
            fast.encode_texts(["a busy lane"])
            release.set()
            other.join()
        finally:
            stop.set()

    with lane.serving() as compute:
        worker = threading.Thread(target=client)
        worker.start()
        compute.serve(stop)
    worker.join()
    assert log == ["one", "all", "one", "one"]


class _Timed:
    """A session that takes ``per_token[0]`` seconds of the fake clock per token (changeable meanwhile)."""

    def __init__(self, session: Any, clock: list[float], per_token: list[float], name: str, log: list[str]) -> None:
        self.session, self.clock, self.per_token, self.name, self.log = session, clock, per_token, name, log

    def run(self, outputs: Any, feeds: dict[str, np.ndarray]) -> Any:
        self.log.append(self.name)
        self.clock[0] += self.per_token[0] * feeds["x"].shape[0] * feeds["x"].shape[1]
        return self.session.run(outputs, feeds)


def test_with_other_tasks_running_query_texts_take_the_session_that_has_been_faster(tmp_path: Path) -> None:
    """Timed by the tower's clock (a fake one here): each session is tried, the faster per token is
    kept, the other is tried again every RETRY_EVERY calls, and a change of speed changes the pick;
    the numbers are the same whichever runs."""
    import dataclasses

    _, tower = _two_session_tower(tmp_path)
    clock, log = [0.0], []
    one_cost, all_cost = [1.0], [3.0]  # the wide session is slower: another task holds the other core
    timed = dataclasses.replace(
        tower,
        session=_Timed(tower.session, clock, one_cost, "one", log),
        wide_session=_Timed(tower.wide_session, clock, all_cost, "all", log),
        clock=lambda: clock[0],
    )
    tokens = BpeTokenizer()(["a blue star", "a photo of a red circle"])
    first = timed.faster(tokens)
    np.testing.assert_allclose(first, tower(tokens), atol=1e-6)
    for _ in range(2 * onnx_text.RETRY_EVERY - 1):
        np.testing.assert_allclose(timed.faster(tokens), first, atol=1e-6)
    every = onnx_text.RETRY_EVERY
    assert log[:2] == ["all", "one"]  # each tried once
    assert log.count("all") == 1 + 2 and log[every - 1] == log[2 * every - 1] == "all"  # retried, still slower
    assert set(log[2:]) - {"all"} == {"one"} and timed.cost["one"] == pytest.approx(1.0)
    all_cost[0] = 0.5  # the other task ended (or is niced): the wide session is now the faster
    log.clear()
    for _ in range(2 * every):
        timed.faster(tokens)
    retried = log.index("all")
    assert retried < every and set(log[:retried]) == {"one"}
    assert log[retried:] == ["all"] * every + ["one"]  # kept once found faster; then the other retried
