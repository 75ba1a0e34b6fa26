"""The report, the verdict (refuse unless better) and the checkpoint's metadata."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from mediasearch.clip.checkpoint import LinearHead
from mediasearch.clip.model import ClipModel
from mediasearch.errors import FinetuneRefused
from mediasearch.lab.dataset import Dataset
from mediasearch.lab.finetune.head import labelled_embeddings
from mediasearch.lab.finetune.options import FinetuneOptions
from mediasearch.lab.finetune.parts import Part, Pixels, score_part


def compare(
    base: ClipModel, chosen: ClipModel, head: LinearHead | None, pixels: Pixels, part: Part, source: str | None = None
) -> dict[str, Any]:
    """Zero-shot vs the chosen model (and its head) on a held-out part."""
    out: dict[str, Any] = {"files": len(part.paths)}
    if source is not None:
        out["source"] = source
    out["zero_shot"] = score_part(base, pixels, part)
    out["fine_tuned"] = score_part(chosen, pixels, part)
    if head is not None and part.classes is not None:
        x, y = labelled_embeddings(chosen, pixels, part, part.classes)
        index = [head.labels.index(c) for c in part.classes]
        out["linear_head"] = float((head.probabilities(x.numpy())[:, index].argmax(axis=1) == y.numpy()).mean())
    out["change"] = out["fine_tuned"] - out["zero_shot"]
    return out


def refuse_unless_better(report: Mapping[str, Any]) -> None:
    """Raise ``FinetuneRefused`` unless the result beats zero-shot on the test set and nothing is worse."""
    test, metric = report["test"], report["metric"]
    zero = test["zero_shot"]
    new = {"fine-tuned model": test["fine_tuned"]}
    if "linear_head" in test:
        new["linear head"] = test["linear_head"]
    where = f"on the held-out test set ({test['files']} files)"
    keep = f"nothing written to {report['out']}"
    worse = {name: v for name, v in new.items() if v < zero - 1e-9}
    if worse:
        name, value = next(iter(worse.items()))
        raise FinetuneRefused(
            f"refused: {where} the {name} scores {metric} {value:.3f} < zero-shot {zero:.3f}; {keep}", dict(report)
        )
    if max(new.values()) <= zero + 1e-9:
        why = "validation chose α = 0 (the zero-shot weights)" if report["alpha"] == 0 else "no gain"
        raise FinetuneRefused(f"refused: no improvement {where} ({metric} {zero:.3f}; {why}); {keep}", dict(report))


def data_info(
    dataset: Dataset, test_set: Dataset | None, train: Part, val: Part, test: Part, options: FinetuneOptions
) -> dict[str, Any]:
    return {
        "source": dataset.source,
        "digest": dataset.digest(),
        "test_source": test_set.source if test_set else None,
        "test_digest": test_set.digest() if test_set else None,
        "kind": "labelled" if train.classes is not None else "captioned",
        "classes": list(train.classes) if train.classes is not None else None,
        "train": len(train.paths),
        "val": len(val.paths),
        "test": len(test.paths),
        "left_out": dataset.problems.count + (test_set.problems.count if test_set else 0),
        "seed": options.seed,
    }


def metadata(report: Mapping[str, Any], options: FinetuneOptions) -> dict[str, Any]:
    """What the checkpoint carries about itself (readable without torch: ``checkpoint.read_metadata``)."""
    return {
        "base": report["base"],
        "data": {k: v for k, v in report["data"].items() if k != "classes"},
        "alpha": report["alpha"],
        "metric": report["metric"],
        "metrics": {"test": report["test"], "reference": report["reference"]},
        "training": {k: report["training"].get(k) for k in ("steps", "best_epoch", "stopped_early", "trainable_params",
                                                            "lr", "weight_decay")},
        "options": {**options.fingerprint_fields(), "head": options.head, "alphas": list(options.alphas)},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
