"""Measure a model on a user's own labelled or captioned set.

``eval_zeroshot``: top-1/top-5 accuracy with a single prompt, the template ensemble (what ``classify``
uses) and the linear head when the checkpoint has one; per-class accuracy, the most common confusions,
per-group accuracy and its largest gap, and, for several sets, a domain-shift table.
``eval_retrieval``: recall@1/5/10 from images to captions and from captions to images.
The metric functions work on plain arrays so that ``finetune`` shares them.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mediasearch.clip.spec import Embedder
from mediasearch.clip.zeroshot import DEMO_TEMPLATES, ensemble_embeddings, logit_scale, templates_for
from mediasearch.errors import DataError
from mediasearch.lab.dataset import Dataset, read_dataset
from mediasearch.search.query import ProgressFn, encode_files

RECALL_K = (1, 5, 10)
PRIMARY = "ensemble"  # the method classify uses; per-class, confusions and groups are about it


def single_prompt(model: Embedder) -> str:
    """The one-prompt baseline: CLIP's "a photo of a {}." (the demo model's phrasing for the demo)."""
    return DEMO_TEMPLATES[0] if model.spec.is_demo else "a photo of a {}."


# ---------------------------------------------------------------- metrics on arrays


def topk_correct(scores: np.ndarray, truth: np.ndarray, k: int) -> np.ndarray:
    """Per row: is the true column among the k highest scores (ties broken by column order)?"""
    k = min(k, scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return (top == truth[:, None]).any(axis=1)


def accuracy(scores: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    return {f"top{k}": float(topk_correct(scores, truth, k).mean()) if len(truth) else 0.0 for k in (1, 5)}


def per_class(scores: np.ndarray, truth: np.ndarray, labels: Sequence[str]) -> dict[str, dict[str, float]]:
    correct = topk_correct(scores, truth, 1)
    out = {}
    for i, label in enumerate(labels):
        mask = truth == i
        if mask.any():
            out[label] = {"n": int(mask.sum()), "top1": float(correct[mask].mean())}
    return out


def confusions(scores: np.ndarray, truth: np.ndarray, labels: Sequence[str], limit: int = 10) -> list[dict[str, Any]]:
    """The most frequent (true label, predicted label) mistakes."""
    predicted = scores.argmax(axis=1)
    pairs = Counter((int(t), int(p)) for t, p in zip(truth, predicted, strict=True) if t != p)
    return [{"true": labels[t], "predicted": labels[p], "count": n} for (t, p), n in pairs.most_common(limit)]


def group_accuracy(correct: np.ndarray, groups: Sequence[str | None]) -> dict[str, Any]:
    """Accuracy per group and the largest gap between two groups (files without a group are left out)."""
    by_group: dict[str, list[bool]] = {}
    for ok, group in zip(correct, groups, strict=True):
        if group is not None:
            by_group.setdefault(group, []).append(bool(ok))
    table = {g: {"n": len(v), "top1": float(np.mean(v))} for g, v in sorted(by_group.items())}
    ungrouped = sum(g is None for g in groups)
    if not table:
        return {"groups": {}, "gap": None, "best": None, "worst": None, "ungrouped": ungrouped}
    best = max(table, key=lambda g: table[g]["top1"])
    worst = min(table, key=lambda g: table[g]["top1"])
    gap = table[best]["top1"] - table[worst]["top1"]
    return {"groups": table, "gap": gap, "best": best, "worst": worst, "ungrouped": ungrouped}


def recall_at_k(sims: np.ndarray, relevant: np.ndarray, ks: Sequence[int] = RECALL_K) -> dict[str, float]:
    """Per query row: is any relevant column among the top k? Averaged over rows with a relevant column."""
    rows = relevant.any(axis=1)
    order = np.argsort(-sims[rows], axis=1, kind="stable")
    hits = np.take_along_axis(relevant[rows], order, axis=1)
    return {f"recall@{k}": float(hits[:, :k].any(axis=1).mean()) if rows.any() else 0.0 for k in ks}


def retrieval_recall(image_embs: np.ndarray, text_embs: np.ndarray, relevant: np.ndarray) -> dict[str, Any]:
    sims = image_embs @ text_embs.T
    return {"image_to_text": recall_at_k(sims, relevant), "text_to_image": recall_at_k(sims.T, relevant.T)}


def prompt_scores(model: Embedder, embs: np.ndarray, labels: Sequence[str], templates: Sequence[str]) -> np.ndarray:
    """Zero-shot logits of each label (one column each) for each embedding."""
    return logit_scale(model) * embs @ ensemble_embeddings(model, labels, templates).T


def head_scores(model: Embedder, embs: np.ndarray, labels: Sequence[str]) -> np.ndarray | None:
    """The linear head's probabilities in ``labels`` order (0 for labels it does not know), if it has one."""
    head = getattr(model, "head", None)
    if head is None:
        return None
    probs = head.probabilities(embs)
    out = np.zeros((len(embs), len(labels)), np.float32)
    for j, label in enumerate(labels):
        if label in head.labels:
            out[:, j] = probs[:, head.labels.index(label)]
    return out


# ---------------------------------------------------------------- files



def read_groups(path: str | os.PathLike[str]) -> dict[Path, str]:
    """A group label per file, from CSV (path,group) or JSONL ({"path", "group"}); relative to the file."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read groups file {source}: {exc}") from None
    if source.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        pairs = [(d.get("path"), d.get("group")) for d in map(json.loads, filter(str.strip, text.splitlines()))]
    else:
        rows = [r for r in csv.reader(io.StringIO(text)) if r]
        if rows and [c.strip().lower() for c in rows[0][:2]] == ["path", "group"]:
            rows = rows[1:]
        pairs = [(r[0], r[1] if len(r) > 1 else None) for r in rows]
    out = {(source.parent / str(p).strip()).resolve(): str(g).strip() for p, g in pairs if p and g}
    if not out:
        raise DataError(f"{source}: no (path, group) rows")
    return out


# ---------------------------------------------------------------- commands


def eval_zeroshot(
    model: Embedder,
    sources: Sequence[str | os.PathLike[str]],
    *,
    groups: str | os.PathLike[str] | None = None,
    prompts: str | os.PathLike[str] | None = None,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Zero-shot (and linear-head) accuracy of ``model`` on each labelled set; several sets: a shift table.

    ``prompts``: learned prompts (``finetune --prompt-learning``), a further method beside the others.
    """
    sets = [read_dataset(s, videos=True) for s in sources]
    for ds in sets:
        if not ds.labelled:
            raise DataError(f"{ds.source}: eval zeroshot needs labels (class folders, or a label column)")
    labels = sorted({label for ds in sets for label in ds.labels})
    if len(labels) < 2:
        raise DataError("eval zeroshot needs at least two classes")
    group_of = read_groups(groups) if groups is not None else None
    learned = _learned_embeddings(model, prompts, labels) if prompts is not None else None
    domains = [_eval_domain(model, ds, labels, group_of, learned, progress) for ds in sets]
    report: dict[str, Any] = {"model": _model_info(model), "labels": labels, "domains": domains}
    if len(domains) > 1:
        report["shift"] = _shift(domains)
    return report


def _learned_embeddings(model: Embedder, prompts: str | os.PathLike[str], labels: list[str]) -> np.ndarray:
    """The labels behind learned context vectors; every label of the set must be one they were trained for."""
    from mediasearch.clip.model import ClipModel
    from mediasearch.clip.prompts import load_prompts

    learned = load_prompts(prompts)
    unknown = sorted(set(labels) - set(learned.labels))
    if unknown:
        raise DataError(f"{prompts}: the learned prompts have no class {', '.join(map(repr, unknown[:5]))}")
    if not isinstance(model, ClipModel):
        raise DataError("learned prompts need a full model (its text tower)")
    return learned.label_embeddings(model, labels)


def _model_info(model: Embedder) -> dict[str, Any]:
    info = getattr(model, "info", None)
    return info() if callable(info) else {"name": model.spec.name, "pretrained": model.spec.pretrained}


def _eval_domain(
    model: Embedder,
    ds: Dataset,
    labels: list[str],
    group_of: dict[Path, str] | None,
    learned: np.ndarray | None,
    progress: ProgressFn | None,
) -> dict[str, Any]:
    examples = list(ds.examples)
    embs, kept, errors = encode_files(model, [e.path for e in examples], progress)
    truth = np.array([labels.index(examples[i].label or "") for i in kept], dtype=int)
    methods: dict[str, np.ndarray] = {
        "prompt": prompt_scores(model, embs, labels, [single_prompt(model)]),
        "ensemble": prompt_scores(model, embs, labels, templates_for(model)),
    }
    if learned is not None:
        methods["learned"] = logit_scale(model) * embs @ learned.T
    linear = head_scores(model, embs, labels)
    if linear is not None:
        methods["linear"] = linear
    primary = methods[PRIMARY]
    out: dict[str, Any] = {
        "source": ds.source,
        "files": len(kept),
        "failed": len(errors) + ds.problems.count,
        "errors": errors,
        "methods": {name: accuracy(scores, truth) for name, scores in methods.items()},
        "per_class": per_class(primary, truth, labels),
        "confusions": confusions(primary, truth, labels),
    }
    if group_of is not None:
        correct = topk_correct(primary, truth, 1)
        out["groups"] = group_accuracy(correct, [group_of.get(examples[i].path) for i in kept])
    return out


def _shift(domains: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Accuracy per domain and method, and its drop from the first domain."""
    first = domains[0]["methods"]
    return [
        {
            "source": d["source"],
            "top1": {m: v["top1"] for m, v in d["methods"].items()},
            "drop": {m: first[m]["top1"] - v["top1"] for m, v in d["methods"].items() if m in first},
        }
        for d in domains
    ]


def eval_retrieval(
    model: Embedder, source: str | os.PathLike[str], *, progress: ProgressFn | None = None
) -> dict[str, Any]:
    """Recall@1/5/10 of captions from images and of images from captions (labels: "a photo of a {label}")."""
    ds = read_dataset(source, videos=True)
    prompt = single_prompt(model)
    pairs = [(e.path, e.caption or prompt.format(e.label)) for e in ds.examples]
    images = list(dict.fromkeys(p for p, _ in pairs))
    texts = list(dict.fromkeys(t for _, t in pairs))
    embs, kept, errors = encode_files(model, images, progress)
    row_of = {images[i]: r for r, i in enumerate(kept)}
    relevant = np.zeros((len(kept), len(texts)), bool)
    col_of = {t: j for j, t in enumerate(texts)}
    for path, text in pairs:
        if path in row_of:
            relevant[row_of[path], col_of[text]] = True
    text_embs = model.encode_texts(texts)
    return {
        "model": _model_info(model),
        "source": ds.source,
        "images": len(kept),
        "texts": len(texts),
        "pairs": int(relevant.sum()),
        "failed": len(errors) + ds.problems.count,
        "errors": errors,
        **retrieval_recall(embs, text_embs, relevant),
    }
