"""Contrastive (CLIP-style) training: the loss and a small training loop.

Shared by ``scripts/train_demo_model.py`` (the bundled demo model, trained from scratch) and the
fine-tune command. Only training code imports this module, so torch is imported at the top.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# (images [B,3,H,W] float, tokens [B,L] long, positive mask [B,B] bool or None: one positive per row)
Batch = tuple[Tensor, Tensor, Tensor | None]
BatchSource = Callable[[int], Iterable[Batch]]
"""A function of the epoch number that yields that epoch's batches."""

MAX_LOGIT_SCALE = math.log(100.0)


def _soft_cross_entropy(logits: Tensor, positives: Tensor) -> Tensor:
    """Cross-entropy of each row of ``logits`` against a target spread uniformly over its positives."""
    counts = positives.sum(dim=1, keepdim=True)
    if bool((counts == 0).any()):
        raise ValueError("positive_mask has a row or column without any positive")
    targets = positives.to(logits.dtype) / counts.to(logits.dtype)
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def clip_loss(
    image_features: Tensor,
    text_features: Tensor,
    logit_scale: Tensor,
    positive_mask: Tensor | None = None,
) -> Tensor:
    """Symmetric InfoNCE between L2-normalised image and text features ([B, D] each).

    ``logit_scale`` is the multiplier (``model.logit_scale.exp()``, as open_clip's forward returns it).
    ``positive_mask[i, j]`` says text j describes image i; without it, pair i matches only text i.
    With several positives, each row's target is uniform over its positives (both directions).
    """
    logits = logit_scale * image_features @ text_features.T
    if positive_mask is None:
        labels = torch.arange(logits.shape[0], device=logits.device)
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    if positive_mask.shape != logits.shape:
        raise ValueError(f"positive_mask has shape {tuple(positive_mask.shape)}, expected {tuple(logits.shape)}")
    mask = positive_mask.to(device=logits.device, dtype=torch.bool)
    return (_soft_cross_entropy(logits, mask) + _soft_cross_entropy(logits.T, mask.T)) / 2


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser and schedule settings for :func:`train_contrastive`."""

    epochs: int
    steps_per_epoch: int  # batches the source yields per epoch (before accumulation)
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 50  # optimiser steps
    accum_steps: int = 1
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    max_grad_norm: float | None = 1.0
    min_lr_ratio: float = 0.0

    @property
    def total_steps(self) -> int:
        """Optimiser steps over the whole run."""
        return self.epochs * math.ceil(self.steps_per_epoch / self.accum_steps)


def cosine_lr(step: int, config: TrainConfig) -> float:
    """Learning rate at optimiser step ``step``: linear warmup, then cosine decay to ``min_lr_ratio``."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    span = max(1, config.total_steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    floor = config.lr * config.min_lr_ratio
    return floor + (config.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with no weight decay on gains, biases, embeddings' scales and the temperature (as open_clip)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        exempt = param.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name
        (no_decay if exempt else decay).append(param)
    groups = [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": config.weight_decay}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, eps=config.eps)


def batch_loss(model: nn.Module, batch: Batch, device: torch.device | str) -> Tensor:
    """The contrastive loss of ``model`` on one batch (features normalised by the model)."""
    images, tokens, mask = batch
    image_features = model.encode_image(images.to(device), normalize=True)  # type: ignore[operator]
    text_features = model.encode_text(tokens.to(device), normalize=True)  # type: ignore[operator]
    return clip_loss(image_features, text_features, model.logit_scale.exp(), mask)  # type: ignore[operator]


def _optimizer_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    step: int,
    scaler: torch.amp.GradScaler | None = None,
) -> None:
    for group in optimizer.param_groups:
        group["lr"] = cosine_lr(step, config)
    if scaler is not None:
        scaler.unscale_(optimizer)
    if config.max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():  # CLIP's rule: the temperature never goes below 0.01
        model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)  # type: ignore[operator]


@dataclass
class TrainState:
    """Where a run stands; together with the model and optimiser it is all a resumed run needs."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimiser steps taken
    batch: int = 0  # batches of the current epoch already done (a multiple of accum_steps)
    loss_sum: float = 0.0  # over the current epoch's done batches
    losses: list[float] = field(default_factory=list)  # mean loss of each completed epoch


class ContrastiveTrainer:
    """The optimiser loop of :func:`train_contrastive`, one epoch at a time, with resumable state.

    ``train_mode`` puts the model in the mode to train in (default ``model.train()``; fine-tuning
    passes ``model.eval()`` to keep batch-norm statistics fixed). ``amp`` uses autocast on CUDA.
    ``loss_fn(model, batch, device)`` replaces :func:`batch_loss` (batches are then whatever it takes).
    """

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        *,
        device: torch.device | str = "cpu",
        amp: bool = False,
        train_mode: Callable[[nn.Module], object] | None = None,
        loss_fn: Callable[[nn.Module, Any, torch.device | str], Tensor] = batch_loss,
    ) -> None:
        self.model, self.config, self.device, self.loss_fn = model, config, device, loss_fn
        self.optimizer = make_optimizer(model, config)
        self.state = TrainState()
        self.amp = amp and torch.device(device).type == "cuda"
        self.amp_dtype = torch.bfloat16 if self.amp and torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda") if self.amp and self.amp_dtype == torch.float16 else None
        self.train_mode = train_mode or (lambda m: m.train())

    def _loss(self, batch: Any) -> Tensor:
        if not self.amp:
            return self.loss_fn(self.model, batch, self.device)
        with torch.autocast(device_type="cuda", dtype=self.amp_dtype):
            return self.loss_fn(self.model, batch, self.device)

    def _step(self) -> None:
        _optimizer_step(self.model, self.optimizer, self.config, self.state.step, self.scaler)
        self.state.step += 1

    def run_epoch(self, batches: Iterable[Any], on_step: Callable[[TrainState], None] | None = None) -> float:
        """Finish the current epoch (skipping the batches a resumed state already did); its mean loss.

        ``on_step`` is called after each optimiser step, when the state can be saved and resumed.
        """
        state, accum = self.state, self.config.accum_steps
        self.train_mode(self.model)
        pending = 0
        for batch in itertools.islice(batches, state.batch, None):
            loss = self._loss(batch)
            scaled = loss / accum
            (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            state.loss_sum, pending = state.loss_sum + float(loss.detach()), pending + 1
            if pending == accum:
                self._step()
                state.batch, pending = state.batch + accum, 0
                if on_step is not None:
                    on_step(state)
        if pending:
            self._step()
            state.batch += pending
        state.losses.append(state.loss_sum / max(state.batch, 1))
        state.epoch, state.batch, state.loss_sum = state.epoch + 1, 0, 0.0
        self.model.eval()
        return state.losses[-1]

    def state_dict(self) -> dict[str, Any]:
        """Model, optimiser and loop state, for ``torch.save``."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "state": dataclasses.asdict(self.state),
        }

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        if self.scaler is not None and saved.get("scaler") is not None:
            self.scaler.load_state_dict(saved["scaler"])
        self.state = TrainState(**saved["state"])


def train_contrastive(
    model: nn.Module,
    batches: BatchSource,
    config: TrainConfig,
    *,
    device: torch.device | str = "cpu",
    log: Callable[[str], None] | None = None,
) -> list[float]:
    """Train ``model`` (an open_clip CLIP) in place; returns the mean loss of each epoch.

    With ``accum_steps > 1`` gradients of consecutive batches are summed before a step; each batch
    still contrasts only against itself (accumulation saves memory, it does not add negatives).
    """
    trainer = ContrastiveTrainer(model, config, device=device)
    for epoch in range(config.epochs):
        started = time.monotonic()
        loss = trainer.run_epoch(batches(epoch))
        if log is not None:
            scale = float(model.logit_scale.detach().exp())  # type: ignore[operator]
            log(f"epoch {epoch + 1}/{config.epochs}: loss {loss:.4f}, "
                f"logit scale {scale:.1f}, {time.monotonic() - started:.1f}s")
    model.eval()
    return trainer.state.losses
