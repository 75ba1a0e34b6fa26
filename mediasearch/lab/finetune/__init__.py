"""`mediasearch finetune`: adapt a CLIP model to a user's captioned or labelled media, never for the worse.

The run: read and check the data (all problems counted up front) → decode every image once →
split train/validation/test by seed → contrastive training (``mediasearch.train``) with early stopping
on validation and a resumable state file beside the output → WiSE-FT: θ = (1−α)·θ_zero-shot + α·θ_tuned
with α chosen on validation (and, with a reference set of the original domain, only among the α that
keep its validation accuracy within ``max_reference_drop``) → optional linear head → the held-out test
set and the reference test set, zero-shot vs chosen → refuse (nothing written) unless it helped.

The package's modules: ``options`` (what a run is asked, its events), ``parts`` (pixels, parts, scoring),
``training`` (what trains, early stopping, the state file), ``wiseft``, ``head``, ``report`` (verdict,
metadata) and ``run`` (``finetune``, the whole run).
"""

from __future__ import annotations

from mediasearch.lab.finetune.head import (
    labelled_embeddings,
    train_head,
)
from mediasearch.lab.finetune.options import (
    CLIP_RECIPE,
    DEFAULT_ALPHAS,
    DEMO_RECIPE,
    REPLAY_RATIO,
    Event,
    FinetuneOptions,
    ProgressFn,
    Recipe,
    parse_alphas,
    quiet,
)
from mediasearch.lab.finetune.parts import (
    Part,
    Pixels,
    embed_part,
    score_part,
    wrap,
)
from mediasearch.lab.finetune.report import (
    compare,
    data_info,
    metadata,
    refuse_unless_better,
)
from mediasearch.lab.finetune.run import (
    Reference,
    finetune,
    reproducible,
)
from mediasearch.lab.finetune.training import (
    Anchors,
    EarlyStopping,
    FinetuneBatch,
    Run,
    batch_size_of,
    batch_source,
    jitter,
    make_loss,
    replay_count,
    resume_path,
    set_trainable,
    steps_per_epoch,
    train,
    train_config,
)
from mediasearch.lab.finetune.wiseft import (
    choose_alpha,
    interpolate,
    sweep,
)

__all__ = [
    "Anchors",
    "CLIP_RECIPE",
    "DEFAULT_ALPHAS",
    "DEMO_RECIPE",
    "EarlyStopping",
    "Event",
    "FinetuneBatch",
    "FinetuneOptions",
    "Part",
    "Pixels",
    "ProgressFn",
    "REPLAY_RATIO",
    "Recipe",
    "Reference",
    "Run",
    "batch_size_of",
    "batch_source",
    "choose_alpha",
    "compare",
    "data_info",
    "embed_part",
    "finetune",
    "interpolate",
    "jitter",
    "labelled_embeddings",
    "make_loss",
    "metadata",
    "parse_alphas",
    "quiet",
    "refuse_unless_better",
    "replay_count",
    "reproducible",
    "resume_path",
    "score_part",
    "set_trainable",
    "steps_per_epoch",
    "sweep",
    "train",
    "train_config",
    "train_head",
    "wrap",
]
