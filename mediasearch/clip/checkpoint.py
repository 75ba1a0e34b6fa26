"""Fine-tuned checkpoints: one safetensors file with the weights, an optional linear head and metadata.

The metadata (base model, data hash, metrics, WiSE-FT alpha, the head's labels) is JSON under the
``mediasearch`` key of the safetensors header, so it can be read without torch. ``--pretrained CKPT``
loads such a file on top of its base architecture (see ``mediasearch.model``).
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mediasearch.errors import ModelError
from mediasearch.fsutil import atomic_path

if TYPE_CHECKING:
    import torch

FORMAT = "mediasearch-finetune/1"
META_KEY = "mediasearch"
HEAD_WEIGHT, HEAD_BIAS = "mediasearch_head.weight", "mediasearch_head.bias"
_MAX_HEADER = 100 << 20


@dataclass(frozen=True)
class LinearHead:
    """A linear classifier on L2-normalised image embeddings (a linear probe)."""

    labels: tuple[str, ...]
    weight: np.ndarray  # [classes, dim]
    bias: np.ndarray  # [classes]

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        """Softmax over the head's labels, one row per embedding."""
        from mediasearch.clip.zeroshot import softmax  # zeroshot imports the model layer, which imports this

        return softmax(embeddings.astype(np.float32) @ self.weight.T + self.bias)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The checkpoint's metadata, or None when the file is not a mediasearch checkpoint."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(8)
            if len(raw) < 8:
                return None
            (size,) = struct.unpack("<Q", raw)
            if size > _MAX_HEADER:
                return None
            header = json.loads(fh.read(size))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    text = (header.get("__metadata__") or {}).get(META_KEY) if isinstance(header, dict) else None
    if not text:
        return None
    try:
        meta = json.loads(text)
    except ValueError:
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == FORMAT else None


def is_checkpoint(path: str | os.PathLike[str] | None) -> bool:
    return path is not None and os.path.isfile(path) and read_metadata(path) is not None


def load(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, torch.Tensor], LinearHead | None]:
    """Metadata, the model's state dict and the head (if the checkpoint has one)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    meta = read_metadata(path)
    if meta is None:
        raise ModelError(f"{path} is not a mediasearch fine-tune checkpoint")
    try:
        state = load_file(str(path))
    except (OSError, SafetensorError) as exc:
        raise ModelError(f"cannot read checkpoint {path}: {exc}") from None
    weight, bias = state.pop(HEAD_WEIGHT, None), state.pop(HEAD_BIAS, None)
    head = None
    if weight is not None and bias is not None:
        labels = tuple(meta.get("head", {}).get("labels", ()))
        head = LinearHead(labels, weight.float().numpy(), bias.float().numpy())
    return meta, state, head


def save(
    path: Path, state: Mapping[str, torch.Tensor], meta: Mapping[str, Any], head: LinearHead | None = None
) -> None:
    """Write the checkpoint atomically (a reader never sees half a file; a failed write leaves none)."""
    import torch
    from safetensors.torch import save_file

    tensors = {
        k: v.detach().float().contiguous().cpu() if v.is_floating_point() else v.detach().cpu()
        for k, v in state.items()
    }
    full_meta = {**meta, "format": FORMAT}
    if head is not None:
        tensors[HEAD_WEIGHT] = torch.from_numpy(np.ascontiguousarray(head.weight, np.float32))
        tensors[HEAD_BIAS] = torch.from_numpy(np.ascontiguousarray(head.bias, np.float32))
        full_meta["head"] = {"type": "linear", "labels": list(head.labels)}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", META_KEY: json.dumps(full_meta)})
