"""Bias audit: how classification and retrieval differ between groups of images, and a mitigation.

``eval_bias`` reports per-group accuracy, each group's share among the top-k results of every label
used as a query against its share in the data, and the largest gaps. ``--debias`` estimates an
attribute's direction from prompt pairs ("a|b;c|d": the differences a-b, c-d) and projects it out of
the label embeddings before classifying and ranking (as in Chuang et al., "Debiasing
Vision-Language Models via Biased Prompts", 2023); the report then holds both runs.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mediasearch.clip.spec import Embedder
from mediasearch.clip.zeroshot import ensemble_embeddings, templates_for
from mediasearch.errors import DataError
from mediasearch.lab.dataset import label_of_folder


@dataclass(frozen=True)
class BiasSet:
    """Images with a group each and, where known, a true label."""

    paths: tuple[Path, ...]
    groups: tuple[str, ...]
    labels: tuple[str | None, ...]


def read_bias_set(path: str | os.PathLike[str]) -> BiasSet:
    """CSV rows ``path,group[,label]`` (a header row is optional); a missing label is the parent folder's."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read bias set {source}: {exc}") from None
    rows = [[c.strip() for c in r] for r in csv.reader(io.StringIO(text)) if r and r[0].strip()]
    if rows and [c.lower() for c in rows[0][:2]] == ["path", "group"]:
        rows = rows[1:]
    bad = [i + 1 for i, r in enumerate(rows) if len(r) < 2 or not r[1]]
    if bad:
        raise DataError(f"{source}: rows {bad[:5]} need a path and a group")
    if not rows:
        raise DataError(f"{source}: no (path, group) rows")
    paths = tuple((source.parent / r[0]).resolve() for r in rows)
    labels = tuple(
        r[2] if len(r) > 2 and r[2] else label_of_folder(p.parent.name) for r, p in zip(rows, paths, strict=True)
    )
    return BiasSet(paths, tuple(r[1] for r in rows), labels)


def parse_pairs(text: str) -> list[tuple[str, str]]:
    """'a woman|a man; a girl|a boy' → [('a woman', 'a man'), ('a girl', 'a boy')]."""
    pairs = []
    for part in filter(str.strip, text.split(";")):
        sides = [s.strip() for s in part.split("|")]
        if len(sides) != 2 or not all(sides):
            raise DataError(f"--debias wants prompt pairs 'a|b;c|d', got {part.strip()!r}")
        pairs.append((sides[0], sides[1]))
    if not pairs:
        raise DataError("--debias needs at least one prompt pair 'a|b'")
    return pairs


def attribute_basis(model: Embedder, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
    """An orthonormal basis (rows) of the directions between each pair's two prompts."""
    first = model.encode_texts([a for a, _ in pairs])
    second = model.encode_texts([b for _, b in pairs])
    diffs = (first - second).astype(np.float64)
    u, s, vt = np.linalg.svd(diffs, full_matrices=False)
    keep = s > 1e-6 * max(float(s.max()), 1e-12)
    return vt[keep].astype(np.float32)


def project_out(embs: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """``embs`` without their components along ``basis``, L2-normalised again."""
    if basis.size == 0:
        return embs
    cleaned = embs - (embs @ basis.T) @ basis
    return cleaned / np.maximum(np.linalg.norm(cleaned, axis=1, keepdims=True), 1e-12)


def audit(
    image_embs: np.ndarray, label_embs: np.ndarray, labels: Sequence[str], data: BiasSet, top_k: int
) -> dict[str, Any]:
    """Per-group accuracy and top-k retrieval shares of one set of label embeddings."""
    sims = image_embs @ label_embs.T
    predicted = [labels[i] for i in sims.argmax(axis=1)]
    names = sorted(set(data.groups))
    groups = np.asarray(data.groups)
    per_group: dict[str, Any] = {}
    k = min(top_k, len(image_embs))
    top = np.argsort(-sims.T, axis=1, kind="stable")[:, :k]  # per label: its k best images
    shown = groups[top.ravel()]
    for name in names:
        mask = groups == name
        known = [i for i in np.flatnonzero(mask) if data.labels[i] in labels]
        correct = [predicted[i] == data.labels[i] for i in known]
        per_group[name] = {
            "n": int(mask.sum()),
            "accuracy": float(np.mean(correct)) if correct else None,
            "data_share": float(mask.mean()),
            "topk_share": float((shown == name).mean()),
        }
    accs = [g["accuracy"] for g in per_group.values() if g["accuracy"] is not None]
    share_gaps = {n: g["topk_share"] - g["data_share"] for n, g in per_group.items()}
    return {
        "groups": per_group,
        "accuracy": float(np.mean([p == t for p, t in zip(predicted, data.labels, strict=True) if t in labels]))
        if any(t in labels for t in data.labels)
        else None,
        "accuracy_gap": float(max(accs) - min(accs)) if accs else None,
        "share_gap": float(max(abs(v) for v in share_gaps.values())),
        "share_gap_group": max(share_gaps, key=lambda n: abs(share_gaps[n])),
    }


def eval_bias(
    model: Embedder,
    source: str | os.PathLike[str],
    labels: Sequence[str],
    *,
    top_k: int = 10,
    debias: str | None = None,
) -> dict[str, Any]:
    """Audit ``model`` on the bias set at ``source`` for ``labels``; with ``debias``, before and after."""
    from mediasearch.search.query import encode_files

    if len(labels) < 2:
        raise DataError("eval bias needs at least two labels")
    if top_k < 1:
        raise DataError(f"--top-k must be at least 1, got {top_k}")
    data = read_bias_set(source)
    embs, kept, errors = encode_files(model, list(data.paths))
    if not kept:
        raise DataError(f"{source}: none of the images could be read")
    data = BiasSet(
        tuple(data.paths[i] for i in kept), tuple(data.groups[i] for i in kept), tuple(data.labels[i] for i in kept)
    )
    label_embs = ensemble_embeddings(model, labels, templates_for(model))
    report: dict[str, Any] = {"labels": list(labels), "top_k": top_k, "n": len(kept), "errors": errors}
    report["before"] = audit(embs, label_embs, labels, data, top_k)
    if debias is not None:
        pairs = parse_pairs(debias)
        basis = attribute_basis(model, pairs)
        report["debias"] = {"pairs": [list(p) for p in pairs], "directions": int(len(basis))}
        report["after"] = audit(project_out(embs, basis), project_out(label_embs, basis), labels, data, top_k)
    return report
