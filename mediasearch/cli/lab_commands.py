"""Lab commands: fine-tune, evaluate, audit and generate with the home's model (no store involved)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from mediasearch.cli.core import JSON_OPT, app, handles_errors, print_errors, settings_of


def _model(ctx: typer.Context, *, precision: str = "auto") -> Any:
    """The settings' model, as the library loads it."""
    from mediasearch.library.models import load, spec_from_settings

    settings = settings_of(ctx)
    return load(settings, spec_from_settings(settings), precision=precision)


@app.command()
@handles_errors
def finetune(
    ctx: typer.Context,
    data: Path = typer.Argument(..., help="CSV/JSONL of (path, caption and/or label), or a folder of class folders."),
    out: Path = typer.Option(..., "--out", help="Checkpoint file to write; use it as --pretrained CKPT."),
    test: Path | None = typer.Option(None, "--test", help="Held-out test set (default: part of DATA)."),
    reference: Path | None = typer.Option(None, "--reference", help="Labelled set of the model's original domain."),
    seed: int = typer.Option(0, "--seed", help="Seed of the train/validation/test split and the shuffling."),
    val_fraction: float = typer.Option(0.2, "--val-fraction"),
    test_fraction: float = typer.Option(0.2, "--test-fraction", help="Held out from DATA when there is no --test."),
    epochs: int | None = typer.Option(None, "--epochs", help="Default: the model's recipe (10; the demo model 45)."),
    batch_size: int = typer.Option(32, "--batch-size"),
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate (default 1e-5; the demo model 2e-3)."),
    weight_decay: float | None = typer.Option(None, "--weight-decay", help="Default 0.1; the demo model 0."),
    warmup: int | None = typer.Option(None, "--warmup", help="Warmup steps (default: a tenth of all steps)."),
    accum_steps: int = typer.Option(1, "--accum-steps", help="Batches per optimiser step (less memory)."),
    lock_image: bool = typer.Option(False, "--lock-image", help="Keep the image tower as it is."),
    lock_text: bool | None = typer.Option(
        None, "--lock-text/--train-text", help="Keep the text tower as it is (default: the demo model only)."
    ),
    unfreeze_last: int | None = typer.Option(None, "--unfreeze-last", help="Train only the last N blocks."),
    patience: int | None = typer.Option(
        None, "--patience", help="Epochs without validation gain before stopping (default 3; the demo model 45)."
    ),
    alphas: str = typer.Option("0:1:0.1", "--alphas", help="WiSE-FT α to try: 'a,b,c' or 'start:stop:step'."),
    max_reference_drop: float = typer.Option(0.02, "--max-reference-drop", help="Largest reference accuracy loss."),
    replay: int | None = typer.Option(
        None, "--replay", help="Reference images mixed into training (default 0; the demo model 720, rendered)."
    ),
    replay_distill: float = typer.Option(10.0, "--replay-distill", help="Weight of keeping their embeddings."),
    augment: bool = typer.Option(True, "--augment/--no-augment", help="Mirror, shift and scale training images."),
    head: str | None = typer.Option(None, "--head", help="'linear': also train a linear probe for classify."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Leave out missing or unreadable files."),
    restart: bool = typer.Option(False, "--restart", help="Ignore the state of an interrupted run."),
    threads: int | None = typer.Option(
        None, "--threads", help="CPU threads while training (default: the demo model 1, else torch's)."
    ),
    prompt_learning: bool = typer.Option(False, "--prompt-learning", help="Learn soft prompts only (model frozen)."),
    shots: int = typer.Option(4, "--shots", min=1, help="With --prompt-learning: examples per class."),
    as_json: bool = JSON_OPT,
) -> None:
    """Fine-tune the model on your media; writes CKPT only if it beats zero-shot on held-out data."""
    if prompt_learning:
        _learn_prompts(ctx, data, out, test, shots, seed, as_json)
        return
    from mediasearch.cli.output import print_json
    from mediasearch.cli.tables import FinetuneProgress, finetune_table
    from mediasearch.lab.finetune import FinetuneOptions, parse_alphas
    from mediasearch.lab.finetune import finetune as run

    options = FinetuneOptions(
        out=out, test=test, reference=reference, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction,
        epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, warmup_steps=warmup,
        accum_steps=accum_steps, lock_image=lock_image, lock_text=lock_text, unfreeze_last=unfreeze_last,
        patience=patience, alphas=parse_alphas(alphas), max_reference_drop=max_reference_drop, replay=replay,
        replay_distill=replay_distill, augment=augment, head=head, skip_bad=skip_bad, restart=restart,
        threads=threads,
    )
    # fp32 master weights whatever the device: training and WiSE-FT must not start from rounded ones.
    base = _model(ctx, precision="fp32")
    with FinetuneProgress(bar=sys.stderr.isatty() and not as_json, lines=not as_json) as progress:
        report = run(base, data, options, progress)
    if as_json:
        print_json(report)
    else:
        finetune_table(report)


def _learn_prompts(ctx: typer.Context, data: Path, out: Path, test: Path | None, shots: int, seed: int,
                   as_json: bool) -> None:
    """``finetune --prompt-learning``: CoOp context vectors from SHOTS examples per class, compared on --test."""
    from mediasearch.cli.output import key_values, print_json
    from mediasearch.lab.prompt_learning import PromptOptions, compare, train_from_set

    model = _model(ctx)
    report = train_from_set(model, data, out, shots, PromptOptions(seed=seed))
    if test is not None:
        report["test_top1"] = compare(model, out, test)
    if as_json:
        print_json(report)
        return
    rows = [("prompts", report["out"]), ("classes", len(report["labels"])), ("examples", report["examples"])]
    rows += [(f"test top-1, {k}", f"{v:.1%}") for k, v in report.get("test_top1", {}).items()]
    key_values("learned prompts", rows)


eval_app = typer.Typer(help="Measure the model on your own labelled or captioned set.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")


@eval_app.command("zeroshot")
@handles_errors
def eval_zeroshot(
    ctx: typer.Context,
    sets: list[Path] = typer.Argument(..., help="Folders of class folders (or labelled CSV/JSONL); several: shift."),
    groups: Path | None = typer.Option(None, "--groups", help="CSV/JSONL of (path, group): accuracy per group."),
    prompts: Path | None = typer.Option(None, "--prompts", help="Learned prompts (finetune --prompt-learning)."),
    as_json: bool = JSON_OPT,
) -> None:
    """Top-1/top-5 accuracy: single prompt, template ensemble, learned prompts, linear head; per class, groups."""
    from mediasearch.cli.output import print_json
    from mediasearch.cli.tables import zeroshot_tables
    from mediasearch.lab.evaluate import eval_zeroshot as run

    report = run(_model(ctx), sets, groups=groups, prompts=prompts)
    if as_json:
        print_json(report)
    else:
        zeroshot_tables(report)


@eval_app.command("calibration")
@handles_errors
def eval_calibration(
    ctx: typer.Context,
    folder: Path = typer.Argument(..., help="Folder of class folders (or a labelled CSV/JSONL)."),
    queries: Path | None = typer.Option(
        None, "--queries", help="One query a line (default: the labels, their words, everyday descriptions)."
    ),
    min_score: float = typer.Option(0.5, "--min-score", help="The cut whose pass rates are shown."),
    as_json: bool = JSON_OPT,
) -> None:
    """How calibrated scores behave: pass rates for exact, partial, unrelated and unknown-word queries."""
    from mediasearch.cli.output import print_json
    from mediasearch.cli.tables import calibration_tables
    from mediasearch.lab.calibration import eval_calibration as run

    report = run(_model(ctx), folder, queries=queries, min_score=min_score)
    if as_json:
        print_json(report)
    else:
        calibration_tables(report)


@eval_app.command("retrieval")
@handles_errors
def eval_retrieval(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="CSV/JSONL of (path, caption), or a folder of class folders."),
    as_json: bool = JSON_OPT,
) -> None:
    """Recall@1/5/10 from images to captions and from captions to images."""
    from mediasearch.cli.output import print_json
    from mediasearch.cli.tables import retrieval_table
    from mediasearch.lab.evaluate import eval_retrieval as run

    report = run(_model(ctx), file)
    if as_json:
        print_json(report)
    else:
        retrieval_table(report)


@eval_app.command("bias")
@handles_errors
def eval_bias(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="CSV of path,group[,label] (label default: the parent folder)."),
    labels: str = typer.Option(..., "--labels", help="Comma-separated labels, also used as queries."),
    top_k: int = typer.Option(10, "--top-k", min=1, help="Results per query counted in the shares."),
    debias: str | None = typer.Option(None, "--debias", help="Attribute prompt pairs 'a|b;c|d' to project out."),
    as_json: bool = JSON_OPT,
) -> None:
    """Per-group accuracy and top-k shares, and the largest gaps; with --debias, before and after."""
    from mediasearch.cli.beyond_output import bias_table
    from mediasearch.cli.output import print_json
    from mediasearch.lab.bias import eval_bias as run
    from mediasearch.library.requests import parse_labels

    model = _model(ctx)
    report = run(model, file, parse_labels(labels), top_k=top_k, debias=debias)
    print_errors(report["errors"])
    if as_json:
        print_json(report)
    else:
        bias_table(report)


@app.command()
@handles_errors
def generate(
    ctx: typer.Context,
    prompt: str = typer.Argument(..., help="What the image should show, e.g. 'a photo of a red circle'."),
    out: Path = typer.Option(..., "--out", help="PNG file to write."),
    steps: int = typer.Option(120, "--steps", min=1, help="Optimiser steps."),
    size: int = typer.Option(0, "--size", help="Side of the square image in pixels (0: the model's input size)."),
    seed: int = typer.Option(0, "--seed"),
    init: Path | None = typer.Option(None, "--init", help="Start from this image instead of a blank one."),
    restarts: int = typer.Option(4, "--restarts", min=1, help="Starts explored; the best one is optimised on."),
    as_json: bool = JSON_OPT,
) -> None:
    """CLIP-guided synthesis: optimise an image until the model sees PROMPT in it."""
    from mediasearch.cli.beyond_output import ScoreProgress
    from mediasearch.cli.output import print_json
    from mediasearch.lab.generate import GenerateOptions
    from mediasearch.lab.generate import generate as run

    model = _model(ctx)
    options = GenerateOptions(steps=steps, size=size, seed=seed, init=init, restarts=restarts)
    with ScoreProgress(bar=sys.stderr.isatty() and not as_json) as progress:
        result = run(model, prompt, options, progress)
    result.image.save(out, format="PNG")
    summary = {"out": str(out), "prompt": prompt, "steps": result.steps}
    summary |= {"initial_score": round(result.initial_score, 4), "final_score": round(result.final_score, 4)}
    if as_json:
        print_json(summary)
    else:
        typer.echo(f"{out}: score {result.initial_score:.3f} → {result.final_score:.3f} after {steps} steps")
