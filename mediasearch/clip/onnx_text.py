"""The cached text tower as an ONNX graph for onnxruntime: a cold text query that never imports torch.

Importing torch is most of a cold ``mediasearch query`` (1-3 s of 2.3 s on 2 cores); onnxruntime
imports in ~50 ms. When ``onnx`` and ``onnxruntime`` are installed (the ``onnx`` extra), the first
``index`` exports the text transformer next to the other caches — the token embedding stays out of
the graph, a numpy array looked up by row, so the graph file is small and opens fast — and quantises
its matrix products to int8 if the embeddings stay within ``INT8_MIN_COSINE`` of float32 (checked once
per model and written in the description, like the bf16 verdict). Everything is checked against the
torch tower before the description is written; without it a cold query uses the torch tower.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mediasearch.clip.text_only import TextOnly
from mediasearch.errors import ModelError
from mediasearch.fsutil import atomic_path, atomic_write
from mediasearch.lane import usable_cpus

if TYPE_CHECKING:
    import torch

    from mediasearch.clip.spec import ModelSpec

TextTower = Any  # clip.text_tower.TextTower, which imports this module
FORMAT = 1
INT8_MIN_COSINE = 0.995  # int8 matrix products are kept only this close to float32, else float32
FP32_MIN_COSINE = 0.99999  # the exported float32 graph against the torch tower
COST_WEIGHT = 0.3  # of a new timing in a session's running cost per token (``OnnxTower.faster``)
RETRY_EVERY = 10  # calls of ``OnnxTower.faster`` between tries of the session that has been slower
CHECK_TEXTS = (
    "a photo of a dog",
    "A Café's  NEON sign, at 3 a.m.!",
    "x",
    "itap of a red car parked by the sea at night.",
    "a origami two children playing football in the snow.",
    "art of the mountains reflected in a calm lake at sunrise.",
)


def available() -> bool:
    """Whether onnxruntime (to run) is installed; exporting also needs onnx."""
    return importlib.util.find_spec("onnxruntime") is not None


def paths(weights: Path) -> tuple[Path, Path, Path]:
    """(graph, token embedding, description) beside a cached text tower's weights file."""
    stem = weights.with_suffix("")
    return stem.with_suffix(".onnx"), stem.with_suffix(".tokens.npy"), stem.with_suffix(".onnx.json")


def export(tower: TextTower, weights: Path, meta: dict[str, Any], reference: Callable[[list[str]], Any]) -> bool:
    """Write the ONNX text tower beside ``weights`` (unless there); False when it cannot be (no onnx,
    a tokenizer that differs from ``reference``, the model's, or a graph unlike the torch tower)."""
    graph, tokens_file, desc = paths(weights)
    if desc.is_file():
        return True
    if not available() or importlib.util.find_spec("onnx") is None:
        return False
    from mediasearch.clip.bpe import BpeTokenizer

    ours = BpeTokenizer(tower.shape.context_length)
    if not (ours(list(CHECK_TEXTS)) == np.asarray(reference(list(CHECK_TEXTS)))).all():
        with contextlib.suppress(OSError):  # remembered: not tried again for this model
            _write_json(desc, {**meta, "onnx_format": FORMAT, "unusable": "tokenizer differs"})
        return False
    with contextlib.suppress(OSError):
        graph.parent.mkdir(parents=True, exist_ok=True)
        verdict = _export_to(graph, tower, ours, tokens_file)
        if verdict is None:
            _write_json(desc, {**meta, "onnx_format": FORMAT, "unusable": "export failed or differs from torch"})
            return False
        _write_json(desc, {**meta, "onnx_format": FORMAT, **verdict})
        return True
    return False


class _Unfaithful(Exception):
    """The exported graph is not the torch tower's: it must not replace anything."""


def _export_to(graph: Path, tower: TextTower, tokenizer: Any, tokens_file: Path) -> dict[str, Any] | None:
    """Export into a temporary beside ``graph``, renamed over it (`fsutil.atomic_path`) only when faithful;
    the verdict, or None."""
    try:
        with atomic_path(graph) as tmp:
            try:
                verdict = _export_checked(tower, tokenizer, tmp, tokens_file)
            except Exception:  # an exporter or quantiser failure must never fail the index run
                verdict = None
            finally:
                Path(f"{tmp}.fp32").unlink(missing_ok=True)
            if verdict is None:
                raise _Unfaithful
    except _Unfaithful:
        return None
    return verdict


def _export_checked(tower: TextTower, tokenizer: Any, out: Path, tokens_file: Path) -> dict[str, Any] | None:
    """Export, check against the torch tower, quantise when faithful; the verdict, or None."""
    import torch

    tokens = torch.from_numpy(tokenizer(list(CHECK_TEXTS)))
    with torch.inference_mode():
        reference = tower(tokens).numpy()
    fp32 = Path(f"{out}.fp32")
    table = tower.weights["token_embedding.weight"].float().numpy()
    _export_graph(tower, fp32)
    embed = _Embed(table, tower.weights["positional_embedding"].float().numpy())
    fp32_cos = _min_cosine(reference, _run(fp32, embed, tokens.numpy()))
    if fp32_cos < FP32_MIN_COSINE:
        return None
    _quantise(fp32, out)
    int8_cos = _min_cosine(reference, _run(out, embed, tokens.numpy()))
    if int8_cos < INT8_MIN_COSINE:
        os.replace(fp32, out)
    with atomic_path(tokens_file) as tmp_table, open(tmp_table, "wb") as fh:
        np.save(fh, table)
    return {"int8": int8_cos >= INT8_MIN_COSINE, "int8_cosine": round(int8_cos, 6), "fp32_cosine": round(fp32_cos, 7)}


def _export_graph(tower: TextTower, path: Path) -> None:
    """TorchScript-based export: the torch.export one needs onnxscript and gains nothing for this graph."""
    import torch

    module = _graph_module(tower)
    x = torch.zeros(2, 5, tower.shape.width)
    ends = torch.tensor([4, 2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "legacy exporter" deprecation notices
        torch.onnx.export(
            module,
            (x, ends),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["x", "ends"],
            output_names=["embedding"],
            dynamic_axes={"x": {0: "batch", 1: "length"}, "ends": {0: "batch"}},
        )


def _quantise(fp32: Path, out: Path) -> None:
    """int8 weights per output channel, activations quantised per batch (dynamic): weight-bound
    products at a quarter of the bytes. The quantiser logs advice at WARNING to the root logger."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        root.setLevel(level)


def _graph_module(tower: TextTower) -> torch.nn.Module:
    """The transformer, final norm, pooling and projection, its weights as parameters (which the
    exporter stores as initializers, which the int8 quantiser needs)."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    shape = tower.shape
    names = [k for k in tower.weights if not k.startswith(("token_embedding", "positional_embedding"))]

    class Graph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.ParameterDict(
                {k.replace(".", "_"): torch.nn.Parameter(tower.weights[k].float(), requires_grad=False) for k in names}
            )

        def p(self, name: str) -> torch.Tensor:
            return self.w[name.replace(".", "_")]

        def norm(self, x: torch.Tensor, prefix: str) -> torch.Tensor:
            return F.layer_norm(x, (shape.width,), self.p(prefix + "weight"), self.p(prefix + "bias"), shape.eps)

        def forward(self, x: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
            for i in range(shape.layers):
                x = self.block(x, f"transformer.resblocks.{i}.")
            x = self.norm(x, "ln_final.")
            x = torch.gather(x, 1, ends[:, None, None].expand(-1, 1, shape.width))[:, 0]
            return x @ self.p("text_projection")

        def block(self, x: torch.Tensor, prefix: str) -> torch.Tensor:
            batch, length = x.shape[0], x.shape[1]
            heads = shape.heads
            h = F.linear(
                self.norm(x, prefix + "ln_1."),
                self.p(prefix + "attn.in_proj_weight"),
                self.p(prefix + "attn.in_proj_bias"),
            )
            q, k, v = (t.reshape(batch, length, heads, -1).transpose(1, 2) for t in h.chunk(3, dim=-1))
            attended = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2)
            attended = attended.reshape(batch, length, shape.width)
            x = x + F.linear(attended, self.p(prefix + "attn.out_proj.weight"), self.p(prefix + "attn.out_proj.bias"))
            h = self.norm(x, prefix + "ln_2.")
            h = F.linear(h, self.p(prefix + "mlp.c_fc.weight"), self.p(prefix + "mlp.c_fc.bias"))
            h = h * torch.sigmoid(1.702 * h) if shape.quick_gelu else F.gelu(h)
            return x + F.linear(h, self.p(prefix + "mlp.c_proj.weight"), self.p(prefix + "mlp.c_proj.bias"))

    return Graph().eval()


@dataclass(frozen=True)
class _Embed:
    """Token rows plus positions, cut at the longest text's end token (a causal mask hides the rest)."""

    table: np.ndarray
    positions: np.ndarray

    def __call__(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ends = tokens.argmax(axis=1)  # the end-of-text token has the highest id
        length = int(ends.max()) + 1
        x = self.table[tokens[:, :length]] + self.positions[:length]
        return np.ascontiguousarray(x, dtype=np.float32), ends.astype(np.int64)


def usable_threads() -> int:
    """Up to 4 of the CPUs this process may use: what a session on ``threads`` 0 gets."""
    return min(4, usable_cpus())


def _session(graph: Path, threads: int = 0) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or usable_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])


def _run(graph: Path, embed: _Embed, tokens: np.ndarray) -> np.ndarray:
    x, ends = embed(tokens)
    return np.asarray(_session(graph).run(None, {"x": x, "ends": ends})[0])


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float(np.sum(a * b, axis=1).min())


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write(path, json.dumps(data, indent=1))


def load_onnx_text_model(spec: ModelSpec, weights: Path, threads: int = 0, wide: int = 0) -> OnnxTextModel | None:
    """The ONNX text tower cached beside ``weights``, or None (none cached, no onnxruntime);
    ``threads`` 0: up to 4 of the CPUs this process may use. ``wide`` > ``threads``: a second session
    of the graph on that many threads (``OnnxTower.wide``), for when the caller has the cores to itself."""
    graph, tokens_file, desc = paths(weights)
    if not available():
        return None
    try:
        meta = json.loads(desc.read_text(encoding="utf-8"))
        if meta.get("onnx_format") != FORMAT or meta.get("key") != spec.key() or meta.get("unusable"):
            return None
        table = np.load(tokens_file, mmap_mode="r")  # a query reads a few rows of it
        from safetensors import safe_open

        with safe_open(str(weights), framework="np") as fh:
            positions = np.asarray(fh.get_tensor("positional_embedding"), dtype=np.float32)
        from mediasearch.clip.bpe import BpeTokenizer

        tokenizer = BpeTokenizer(int(meta["context_length"]))
        session = _session(graph, threads)
        wide_session = _session(graph, wide) if wide > max(threads, 1) else None
    except (OSError, ValueError, KeyError, TypeError, ModelError):
        return None
    except Exception:  # onnxruntime's own errors (a damaged graph): the torch tower instead
        return None
    embed, scale = _Embed(table, positions), float(meta["logit_scale"])
    tower = OnnxTower(session, embed, scale, bool(meta.get("int8")), wide_session)
    return OnnxTextModel(spec, int(meta["dim"]), tower, tokenizer)


@dataclass
class OnnxTower:
    """The graph, the lookup in front of it, and what ``zeroshot.logit_scale`` reads."""

    session: Any
    embed: _Embed
    logit_scale: float
    int8: bool
    wide_session: Any = None  # the same graph on more threads (None: one session only)

    def __call__(self, tokens: np.ndarray) -> np.ndarray:
        return self._run(self.session, tokens)

    clock: Callable[[], float] = field(default=time.perf_counter, repr=False)
    # Seconds per token of each session ("one", "all") lately, as ``faster`` measured them
    cost: dict[str, float] = field(default_factory=dict, repr=False)
    _calls: int = field(default=0, repr=False)

    def wide(self, tokens: np.ndarray) -> np.ndarray:
        """As a call, on the session with more threads when there is one. The numbers match within
        float noise (identical in our checks: the threads split products by rows and columns)."""
        return self._run(self.wide_session or self.session, tokens)

    def faster(self, tokens: np.ndarray) -> np.ndarray:
        """As a call, on whichever session has been faster per token lately (for a caller that has the
        cores it may use to itself). Which one that is depends on who else runs: a process at the same
        priority on the other core makes every step of the wide one wait for its slower thread (2x
        slower than one thread), while one at a lower priority (a niced batch job, the enrichers'
        workers) barely slows it. So both are timed, and the slower one tried again now and then."""
        if self.wide_session is None:
            return self(tokens)
        self._calls += 1
        name, retried = self._pick()
        session = self.wide_session if name == "all" else self.session
        x, ends = self.embed(tokens)
        started = self.clock()
        out = np.asarray(session.run(None, {"x": x, "ends": ends})[0], dtype=np.float32)
        spent = (self.clock() - started) / max(1, x.shape[0] * x.shape[1])
        before = self.cost.get(name)
        # A retried session's old cost is stale: its new timing replaces it
        self.cost[name] = spent if before is None or retried else (1 - COST_WEIGHT) * before + COST_WEIGHT * spent
        return out

    def _pick(self) -> tuple[str, bool]:
        """The session to run, and whether it is the slower one tried again."""
        untried = [n for n in ("all", "one") if n not in self.cost]
        if untried:
            return untried[0], True
        best = min(self.cost, key=lambda n: self.cost[n])
        if self._calls % RETRY_EVERY == 0:  # the other one again: the machine's load may have changed
            return ("one" if best == "all" else "all"), True
        return best, False

    def _run(self, session: Any, tokens: np.ndarray) -> np.ndarray:
        x, ends = self.embed(tokens)
        return np.asarray(session.run(None, {"x": x, "ends": ends})[0], dtype=np.float32)


@dataclass
class OnnxTextModel(TextOnly):
    """An ``Embedder`` for texts only, run by onnxruntime; the image side needs ``load_model``."""

    spec: ModelSpec
    dim: int
    model: OnnxTower
    tokenizer: Any
    device: str = "cpu"
    _text_cache: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def _features(self, chunk: list[str]) -> np.ndarray:
        return self.model(self.tokenizer(chunk))
