"""The run: data, reference set, training, sweep, head, test, verdict (`finetune`)."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mediasearch.clip import checkpoint
from mediasearch.clip.model import ClipModel
from mediasearch.errors import ConfigError, DataError
from mediasearch.lab.dataset import Dataset, Example, read_dataset, split
from mediasearch.lab.finetune.head import train_head
from mediasearch.lab.finetune.options import Event, FinetuneOptions, ProgressFn, Recipe, quiet
from mediasearch.lab.finetune.parts import Part, Pixels, embed_part, score_part, wrap
from mediasearch.lab.finetune.report import compare, data_info, metadata, refuse_unless_better
from mediasearch.lab.finetune.training import (
    Anchors,
    EarlyStopping,
    Run,
    batch_size_of,
    resume_path,
    set_trainable,
    train,
    train_config,
)
from mediasearch.lab.finetune.wiseft import interpolate, sweep


def finetune(
    base: ClipModel, data: str | os.PathLike[str], options: FinetuneOptions, progress: ProgressFn = quiet
) -> dict[str, Any]:
    """Fine-tune ``base`` on DATA and write ``options.out``; returns the report. Options left at None
    take the model's recipe (``DEMO_RECIPE`` for the demo model, ``CLIP_RECIPE`` otherwise).

    Raises ``DataError`` (before any training) for bad data and ``FinetuneRefused`` when the result
    is not better than zero-shot on the held-out test set (nothing is written then).
    """
    recipe = options.recipe(base.spec.is_demo)
    _check_options(options, recipe)
    with reproducible(recipe.threads, options.seed, deterministic=options.deterministic):
        return _finetune(base, data, options.resolved(base.spec.is_demo), recipe, progress)


@contextlib.contextmanager
def reproducible(threads: int | None, seed: int, *, deterministic: bool) -> Iterator[None]:
    """A fixed CPU thread count (sums split across threads round differently), a seeded torch and its
    deterministic algorithms (warnings only, where an operation has none) for the length of a run."""
    was = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
           torch.is_deterministic_algorithms_warn_only_enabled())
    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.set_num_threads(was[0])
        torch.use_deterministic_algorithms(was[1], warn_only=was[2])


def _finetune(
    base: ClipModel, data: str | os.PathLike[str], options: FinetuneOptions, recipe: Recipe, progress: ProgressFn
) -> dict[str, Any]:
    started = time.monotonic()
    pixels = Pixels(base)
    dataset, test_set = _load_sets(base, pixels, data, options, progress)
    train_part, val_part, test_part = _parts(dataset, test_set, options)
    reference = _reference(base, pixels, options, progress)
    if recipe.replay and (reference is None or reference.replay is None):
        raise ConfigError("--replay needs a reference set of the original domain (--reference DATA)")
    replay = reference.replay if reference is not None and reference.replay is not None else None
    run = Run(base, options, pixels, train_part, val_part, _fingerprint(base, dataset, test_set, options), progress,
              replay, _anchors(base, pixels, replay, options.replay_distill), recipe)
    module = copy.deepcopy(base.model).float()
    zero = {k: v.detach().clone() for k, v in base.model.state_dict().items()}
    memory, training = _train_if_asked(run, module)
    rows: list[dict[str, float]] = []
    alpha = 0.0
    if memory.best_state is not None:
        alpha, rows = sweep(run, module, zero, memory.best_state, reference.val if reference else None)
    module.load_state_dict(interpolate(zero, memory.best_state or zero, alpha))
    chosen = wrap(base, module)
    head = train_head(chosen, pixels, train_part, val_part, val_part.classes or ()) if options.head else None
    report = {
        "out": str(options.out),
        "base": {"name": base.spec.name, "pretrained": base.spec.pretrained, "key": base.spec.key()},
        "data": data_info(dataset, test_set, train_part, val_part, test_part, options),
        "metric": "top1" if test_part.classes is not None else "recall@1",
        "training": {**training, "best_epoch": memory.best_epoch, "stopped_early": memory.stopped_early,
                     "history": memory.history},
        "alpha": alpha,
        "sweep": rows,
        "test": compare(base, chosen, head, pixels, test_part),
        "reference": compare(base, chosen, None, pixels, reference.test, reference.source) if reference else None,
    }
    report["seconds"] = round(time.monotonic() - started, 1)
    resume_path(options.out).unlink(missing_ok=True)  # the run is complete, whatever the verdict
    refuse_unless_better(report)
    checkpoint.save(options.out, module.state_dict(), metadata(report, options), head)
    return report


def _train_if_asked(run: Run, module: nn.Module) -> tuple[EarlyStopping, dict[str, Any]]:
    """Training (with ``--epochs 0``: none, for a linear probe alone) and what the report says of it."""
    trainable = set_trainable(module, run.options)
    if not run.recipe.epochs:
        memory = EarlyStopping(best_score=score_part(run.base, run.pixels, run.val))
        return memory, {"resumed_from": None, "steps": 0, "losses": [], "trainable_params": 0}
    config = train_config(run)
    memory, training = train(run, module, config)
    settings = {"lr": config.lr, "weight_decay": config.weight_decay, "warmup_steps": config.warmup_steps,
                "batch_size": batch_size_of(run), "trainable_params": trainable}
    return memory, {**training, **settings}


def _check_options(options: FinetuneOptions, recipe: Recipe) -> None:
    if options.out.is_dir():
        raise ConfigError(f"--out {options.out} is a folder: give the checkpoint's file name")
    if options.head not in (None, "linear"):
        raise ConfigError(f"--head must be 'linear', got {options.head!r}")
    if not 0 < options.val_fraction < 1 or not 0 <= options.test_fraction < 1:
        raise ConfigError("--val-fraction must be in (0, 1) and --test-fraction in [0, 1)")
    if recipe.epochs < 0 or options.batch_size < 2 or options.accum_steps < 1 or recipe.patience < 1:
        raise ConfigError("need --epochs >= 0, --batch-size >= 2, --accum-steps >= 1, --patience >= 1")
    if not options.alphas or any(not 0 <= a <= 1 for a in options.alphas):
        raise ConfigError("--alphas must be numbers between 0 and 1")
    if options.unfreeze_last is not None and options.unfreeze_last < 1:
        raise ConfigError("--unfreeze-last must be at least 1")
    if recipe.threads is not None and recipe.threads < 1:
        raise ConfigError("--threads must be at least 1")


def _load_sets(
    base: ClipModel, pixels: Pixels, data: str | os.PathLike[str], options: FinetuneOptions, progress: ProgressFn
) -> tuple[Dataset, Dataset | None]:
    """Read DATA (and --test), decode every image once, and fail with all the counts if anything is bad."""
    sets = [read_dataset(data)] + ([read_dataset(options.test)] if options.test else [])
    checked = []
    for ds in sets:
        bad = pixels.add([e.path for e in ds.examples], base.image_size, progress)
        ds = ds.without(bad)
        ds.check(skip_bad=options.skip_bad)
        if ds.problems.count:
            progress(Event("note", info={"message": f"{ds.source}: left out {ds.problems.summary()}"}))
        checked.append(ds)
    if len(checked) == 2 and checked[0].labelled != checked[1].labelled:
        raise DataError("DATA and --test must both have labels, or both captions")
    return checked[0], checked[1] if len(checked) == 2 else None


def _parts(dataset: Dataset, test_set: Dataset | None, options: FinetuneOptions) -> tuple[Part, Part, Part]:
    test_fraction = 0.0 if test_set is not None else options.test_fraction
    if test_set is None and test_fraction <= 0:
        raise ConfigError("a held-out test set is required: pass --test DATA or a --test-fraction above 0")
    parts = split(dataset.examples, seed=options.seed, val_fraction=options.val_fraction, test_fraction=test_fraction)
    test = test_set.examples if test_set is not None else parts.test
    classes = None
    if options.head and not dataset.labelled:
        raise ConfigError("--head linear needs labelled data (class folders or a label column)")
    if dataset.labelled:
        classes = tuple(sorted(set(dataset.labels) | set(test_set.labels if test_set else [])))
        if len(classes) < 2:
            raise DataError(f"{dataset.source}: needs at least two classes")
    for name, examples in (("train", parts.train), ("validation", parts.val), ("test", test)):
        if len({e.path for e in examples}) < 2:
            raise DataError(f"{dataset.source}: too few examples for a {name} split ({parts.sizes()})")
    return Part("train", parts.train, classes), Part("val", parts.val, classes), Part("test", test, classes)


@dataclass(frozen=True)
class Reference:
    """A labelled set of the original domain: validation (α choice), test (report), replay (training)."""

    source: str
    val: Part
    test: Part
    replay: Part | None


def _reference(base: ClipModel, pixels: Pixels, options: FinetuneOptions, progress: ProgressFn) -> Reference | None:
    """The user's --reference split in parts, or for the demo model freshly rendered filled shapes."""
    if options.reference is not None:
        ds = read_dataset(options.reference)
        if not ds.labelled:
            raise DataError(f"--reference {options.reference} needs labels (class folders or a label column)")
        ds = ds.without(pixels.add([e.path for e in ds.examples], base.image_size, progress))
        ds.check(skip_bad=True)
        third = 1 / 3 if options.replay else 0.0
        parts = split(ds.examples, seed=options.seed, val_fraction=0.5 - third / 2, test_fraction=third)
        if not parts.val or not parts.train or (options.replay and not parts.test):
            raise DataError(f"--reference {options.reference} is too small to split: give 3+ images per class")
        classes = tuple(ds.labels)
        val, test = Part("reference_val", parts.val, classes), Part("reference", parts.train, classes)
        replay = Part("replay", parts.test[: options.replay], classes) if options.replay else None
        return Reference(ds.source, val, test, replay)
    if not base.spec.is_demo or options.reference_size <= 0:
        return None
    from mediasearch.lab.shapes import CLASSES, class_name, make_library

    classes = tuple(class_name(c, s) for c, s in CLASSES)
    rendered = []
    with tempfile.TemporaryDirectory(prefix="mediasearch-reference-") as tmp:
        # Fixed seeds: every run is compared on the same reference images.
        for seed, n in ((7001, options.reference_size), (7002, options.reference_size), (7003, options.replay)):
            files = make_library(Path(tmp) / str(seed), n, seed) if n else []
            examples = tuple(Example(p, None, class_name(c, s)) for p, c, s in files)
            pixels.add([e.path for e in examples], base.image_size, progress)
            rendered.append(examples)
    source = f"filled shapes (rendered, {options.reference_size} for validation and for test)"
    replay = Part("replay", rendered[2], classes) if options.replay else None
    return Reference(source, Part("reference_val", rendered[0], classes), Part("reference", rendered[1], classes),
                     replay)


def _fingerprint(base: ClipModel, dataset: Dataset, test_set: Dataset | None, options: FinetuneOptions) -> str:
    key = [base.spec.key(), dataset.digest(), test_set.digest() if test_set else None, options.fingerprint_fields()]
    return hashlib.blake2b(json.dumps(key, default=str).encode(), digest_size=12).hexdigest()


def _anchors(base: ClipModel, pixels: Pixels, replay: Part | None, weight: float) -> Anchors | None:
    """The zero-shot model's embeddings of the replay images (kept as they are by the loss)."""
    if replay is None or weight <= 0:
        return None
    paths = replay.paths
    return Anchors({p: i for i, p in enumerate(paths)}, torch.from_numpy(embed_part(base, pixels, paths)), weight)
