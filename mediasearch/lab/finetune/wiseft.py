"""WiSE-FT: interpolate the zero-shot and tuned weights, sweep alpha, choose it on validation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor, nn

from mediasearch.lab.finetune.options import Event
from mediasearch.lab.finetune.parts import Part, score_part, wrap
from mediasearch.lab.finetune.training import Run


def interpolate(zero: Mapping[str, Tensor], tuned: Mapping[str, Tensor], alpha: float) -> dict[str, Tensor]:
    """WiSE-FT: (1 − α)·θ_zero-shot + α·θ_fine-tuned for floating tensors; others from the tuned model."""
    out = {}
    for key, value in tuned.items():
        start = zero[key].to(value.device)
        out[key] = (1 - alpha) * start.to(value.dtype) + alpha * value if value.is_floating_point() else value
    return out


def sweep(
    run: Run, module: nn.Module, zero: Mapping[str, Tensor], tuned: Mapping[str, Tensor], ref_val: Part | None
) -> tuple[float, list[dict[str, float]]]:
    """Score each α on validation (and the reference's validation half); pick the best allowed α."""
    rows = []
    ref_zero = score_part(run.base, run.pixels, ref_val) if ref_val is not None else None
    for i, alpha in enumerate(run.options.alphas):
        module.load_state_dict(interpolate(zero, tuned, alpha))
        model = wrap(run.base, module)
        row = {"alpha": alpha, "val": score_part(model, run.pixels, run.val)}
        if ref_val is not None:
            row["reference_val"] = score_part(model, run.pixels, ref_val)
        rows.append(row)
        run.progress(Event("sweep", i + 1, len(run.options.alphas), row))
    return choose_alpha(rows, run.options.max_reference_drop, ref_zero), rows


def choose_alpha(
    rows: Sequence[Mapping[str, float]], max_reference_drop: float, reference_zero: float | None = None
) -> float:
    """The α with the best validation score (the smaller α on a tie), among those that keep the
    reference's validation accuracy within ``max_reference_drop`` of the zero-shot model's."""
    allowed = [r for r in rows if reference_zero is None or "reference_val" not in r
               or r["reference_val"] >= reference_zero - max_reference_drop - 1e-9]
    if not allowed:
        return 0.0
    return min(allowed, key=lambda r: (-round(r["val"], 9), r["alpha"]))["alpha"]
