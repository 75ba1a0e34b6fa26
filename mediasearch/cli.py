"""The command line: parse, call into the pipeline, print. Nothing heavy is imported at start-up."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

from mediasearch import __version__
from mediasearch.errors import MediaSearchError

app = typer.Typer(
    name="mediasearch",
    help="Find photos and moments in videos by what they show.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
_F = TypeVar("_F", bound=Callable[..., Any])
JSON_OPT = typer.Option(False, "--json", help="Print one JSON document on stdout.")


# Set once a command's own work has ended, whatever its outcome: a Ctrl-C or SIGTERM after that point
# would only turn a finished (or already reported) run into a traceback or Click's "Aborted!".
_WORK = {"over": False}


def handles_errors(fn: _F) -> _F:
    """Turn domain errors into one red line and exit 1; Ctrl-C into a hint and exit 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from mediasearch.output import error_line

        try:
            return fn(*args, **kwargs)
        except MediaSearchError as exc:
            error_line(str(exc))
            raise typer.Exit(1) from None
        except OSError as exc:  # the home or a file we had to write: unwritable, full disk, ...
            error_line(_os_error_line(exc))
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            error_line("interrupted; run the same command again to resume")
            raise typer.Exit(130) from None
        finally:
            _WORK["over"] = True  # what follows is exiting (see main)

    return wrapper  # type: ignore[return-value]


def _os_error_line(exc: OSError) -> str:
    from mediasearch.discover import display_path

    name = exc.filename
    where = f"{display_path(os.fsdecode(name))}: " if isinstance(name, (str, bytes)) and name else ""
    return f"{where}{(exc.strerror or str(exc)).lower()}"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mediasearch {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    home: Path | None = typer.Option(None, "--home", help="Where the index, config and caches live."),
    model: str | None = typer.Option(None, "--model", help="open_clip model name, or 'demo'."),
    pretrained: str | None = typer.Option(None, "--pretrained", help="Pretrained tag or weights file."),
    device: str | None = typer.Option(None, "--device", help="auto, cpu, cuda or mps."),
    qdrant_url: str | None = typer.Option(None, "--qdrant-url", help="Use a Qdrant server instead."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True),
) -> None:
    """Global options; every one can also come from MEDIASEARCH_* or the home's config.toml."""
    ctx.obj = {"home": home, "model": model, "pretrained": pretrained, "device": device}
    ctx.obj["qdrant_url"] = qdrant_url


def settings_of(ctx: typer.Context, **overrides: Any) -> Any:
    from mediasearch.settings import load_settings

    return load_settings({**(ctx.obj or {}), **overrides})


def _daemon(settings: Any) -> Any:
    """The daemon serving this home, if one runs: it owns the store, so commands go through it."""
    from mediasearch.client import find_daemon

    return find_daemon(settings.home)


# -- indexing ------------------------------------------------------------------------------------


@app.command()
@handles_errors
def index(
    ctx: typer.Context,
    paths: list[Path] = typer.Argument(..., help="Folders (or files) to bring the index in step with."),
    frame_interval: float | None = typer.Option(None, help="Seconds between sampled video frames."),
    max_frames: int | None = typer.Option(None, help="At most this many frames per video."),
    batch_size: int | None = typer.Option(None, help="Images per model batch (0: chosen for the device)."),
    workers: int | None = typer.Option(None, help="Decoding threads (0: automatic)."),
    hidden: bool = typer.Option(False, "--hidden", help="Also index hidden files and folders."),
    exact_times: bool = typer.Option(
        False, "--exact-times", help="Sample videos at exactly every interval, not at keyframes near it."
    ),
    tag: bool = typer.Option(False, "--tag", help="Tag new items with the built-in vocabulary."),
    as_json: bool = JSON_OPT,
) -> None:
    """Add, update and remove index entries to match the folders."""
    from mediasearch import library
    from mediasearch.indexer import IndexOptions, index_paths
    from mediasearch.output import RichProgress, key_values, print_json

    settings = settings_of(
        ctx,
        frame_interval=frame_interval,
        max_frames=max_frames,
        batch_size=batch_size,
        workers=workers,
        tagging=tag or None,
    )
    options = IndexOptions(
        settings.frame_interval, settings.max_frames, settings.batch_size, settings.workers, hidden,
        exact_times=exact_times,
    )
    daemon = _daemon(settings)
    if daemon is not None:
        request = {**dataclasses.asdict(options), "tag": settings.tagging}
        data = daemon.index([str(p) for p in paths], request, model=settings.model)
    else:
        opened = library.open_for_index(settings)
        try:
            tagger = library.index_tagger(settings, opened)
            progress = RichProgress() if sys.stderr.isatty() and not as_json else None
            summary = index_paths([str(p) for p in paths], opened.model, opened.store, options, progress, tagger)
            library.finish_index(settings, opened, summary.to_json())
        finally:
            opened.close()
        data = summary.to_json()
    if as_json:
        print_json(data)
        return
    key_values("indexed", [(k, v) for k, v in data.items() if k != "errors"])
    _print_errors(data["errors"])


def _print_errors(errors: list[dict[str, str]]) -> None:
    from mediasearch.output import console, shown

    out = console(stderr=True)
    for err in errors:
        out.print(f"[yellow]skipped[/yellow] {shown(err['path'])}: {shown(err['error'])}", soft_wrap=True)


@app.command()
@handles_errors
def forget(ctx: typer.Context, path: Path = typer.Argument(...), as_json: bool = JSON_OPT) -> None:
    """Drop a folder (or file) and everything under it from the index."""
    from mediasearch import library
    from mediasearch.output import console, print_json

    settings = settings_of(ctx)
    daemon = _daemon(settings)
    dropped = daemon.forget(str(path))["files"] if daemon else library.forget(settings, str(path))
    if as_json:
        print_json({"path": str(path.absolute()), "files": dropped})
    else:
        console().print(f"forgot {dropped} files under {path.absolute()}")


@app.command()
@handles_errors
def status(ctx: typer.Context, as_json: bool = JSON_OPT) -> None:
    """What is indexed, by which model, where, the last run and its failures."""
    from mediasearch import library
    from mediasearch.output import key_values, print_json

    settings = settings_of(ctx)
    daemon = _daemon(settings)
    data = daemon.status() if daemon else library.status(settings)
    if as_json:
        print_json(data)
        return
    model = data["model"] or {}
    rows = [(k, data[k]) for k in ("home", "files", "images", "videos", "frames", "store")]
    if model:
        rows.append(("model", f"{model.get('name', '-')} ({model.get('pretrained') or 'bundled weights'})"))
    last = data["last_run"] or {}
    if last:
        rows.append(("last run", ", ".join(f"{k}={v}" for k, v in last.items() if k != "collection")))
    if data.get("daemon"):
        info = data["daemon"]
        rows.append(("daemon", f"pid {info['pid']} at {info['url']}, watching {len(info['roots'])} folders"))
    key_values("mediasearch", rows)
    _print_errors(data["failures"])


# -- search --------------------------------------------------------------------------------------


@app.command()
@handles_errors
def query(
    ctx: typer.Context,
    text: str | None = typer.Argument(None, help="What to look for; '2:dog' weighs it."),
    image: list[Path] = typer.Option([], "--image", help="An example image (alone or with text)."),
    also: list[str] = typer.Option([], "--and", help="More text to add ('w:text' weighs it)."),
    not_: list[str] = typer.Option([], "--not", help="Text to subtract ('w:text' weighs it)."),
    not_image: list[Path] = typer.Option([], "--not-image", help="An image to subtract."),
    weight: float | None = typer.Option(None, "--weight", help="Weight of TEXT (default 1)."),
    limit: int = typer.Option(10, "--limit", "-k", min=1),
    kind: str | None = typer.Option(None, "--type", help="image or video."),
    path: Path | None = typer.Option(None, "--path", help="Only under this folder."),
    tags: list[str] = typer.Option([], "--tag", help="Only items with this tag (repeatable)."),
    after: str | None = typer.Option(None, "--after", help="Taken on or after (YYYY[-MM[-DD]])."),
    before: str | None = typer.Option(None, "--before", help="Taken before (YYYY[-MM[-DD]])."),
    min_score: float | None = typer.Option(None, "--min-score", help="Calibrated cut-off, 0..1."),
    sort: str = typer.Option("score", "--sort", help="score or date."),
    raw: bool = typer.Option(False, "--raw", help="Embed the text as is, without prompt templates."),
    paths_only: bool = typer.Option(False, "--paths", help="One path per line."),
    as_json: bool = JSON_OPT,
) -> None:
    """Find items by text, by example image, or both; --not subtracts."""
    from mediasearch import library
    from mediasearch.search import Query, parse_date, search

    q = Query(
        terms=_terms(text, weight, also, image, not_, not_image),
        raw=raw,
        limit=limit,
        kind=_choice("--type", kind, ("image", "video")),
        path_prefix=str(path.absolute()) if path else None,
        tags=tuple(tags),
        after=parse_date(after) if after else None,
        before=parse_date(before) if before else None,
        min_score=min_score,
        sort=_choice("--sort", sort, ("score", "date")) or "score",
    )
    settings = settings_of(ctx)
    daemon = _daemon(settings)
    if daemon is not None:
        hits = daemon.query(q, model=settings.model)
    else:
        opened = library.open_for_query(settings, text_only=all(t.kind == "text" for t in q.terms))
        with opened.store:
            hits = search(opened.store, opened.model, q)
    _print_hits(hits, as_json, paths_only, title=text or "")


def _choice(flag: str, value: str | None, allowed: tuple[str, ...]) -> str | None:
    if value is not None and value not in allowed:
        raise typer.BadParameter(f"{flag} must be one of {', '.join(allowed)}")
    return value


def _terms(
    text: str | None,
    weight: float | None,
    also: list[str],
    images: list[Path],
    nots: list[str],
    not_images: list[Path],
) -> tuple[Any, ...]:
    """Command-line query parts → weighted search terms ('w:text' weighs a text)."""
    from mediasearch.search import Term, parse_weighted

    terms: list[Term] = []
    if text:
        w, t = parse_weighted(text)
        terms.append(Term("text", t, weight if weight is not None else w))
    terms += [Term("text", t, w) for w, t in map(parse_weighted, also)]
    terms += [Term("image", str(p), 1.0) for p in images]
    terms += [Term("text", t, -w) for w, t in map(parse_weighted, nots)]
    terms += [Term("image", str(p), -1.0) for p in not_images]
    return tuple(terms)


def _print_hits(hits: list[Any], as_json: bool, paths_only: bool, title: str = "") -> None:
    from mediasearch.output import hits_table, print_json

    if as_json:
        print_json([h.to_json() for h in hits])
    elif paths_only:
        for hit in hits:
            sys.stdout.write(hit.path + "\n")
    else:
        hits_table(hits, title)


@app.command()
@handles_errors
def similar(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="An indexed file, or any image or video."),
    limit: int = typer.Option(10, "--limit", "-k", min=1),
    kind: str | None = typer.Option(None, "--type", help="image or video."),
    paths_only: bool = typer.Option(False, "--paths", help="One path per line."),
    as_json: bool = JSON_OPT,
) -> None:
    """Items that look like FILE."""
    from mediasearch import library
    from mediasearch.search import Query, search_vector, similar_vector

    q = Query(limit=limit, kind=_choice("--type", kind, ("image", "video")))
    settings = settings_of(ctx)
    daemon = _daemon(settings)
    if daemon is not None:
        hits = daemon.similar(str(file), q, model=settings.model)
    else:
        opened = library.open_for_query(settings)
        with opened.store:
            vec, own = similar_vector(opened.store, opened.model, str(file))
            hits = search_vector(opened.store, opened.model, vec, q, exclude_ids=own)
    _print_hits(hits, as_json, paths_only, title=f"like {file}")


@app.command()
@handles_errors
def tag(
    ctx: typer.Context,
    vocab: Path | None = typer.Option(None, "--vocab", help="Tags, one a line ('tag = 0.7')."),
    prompts: Path | None = typer.Option(None, "--prompts", help="Tag with learned prompts' classes instead."),
    as_json: bool = JSON_OPT,
) -> None:
    """Zero-shot tags for everything indexed; new items are tagged at index time from then on."""
    from mediasearch import library
    from mediasearch.output import key_values, print_json

    settings = settings_of(ctx)
    daemon = _daemon(settings)
    vocab_path = str(vocab) if vocab else None
    prompts_path = str(prompts) if prompts else None
    result = daemon.tag(vocab_path, prompts_path) if daemon else library.tag_all(settings, vocab_path, prompts_path)
    if as_json:
        print_json(result)
        return
    key_values("tagged", [("files", result["files"]), ("with tags", result["tagged"])])
    _print_tag_counts(result["tags"])


def _print_tag_counts(counts: dict[str, int]) -> None:
    from rich.markup import escape
    from rich.table import Table

    from mediasearch.output import console

    table = Table("tag", "files")
    for name, n in counts.items():
        table.add_row(escape(name), str(n))
    console().print(table)


@app.command("tags")
@handles_errors
def list_tags(ctx: typer.Context, as_json: bool = JSON_OPT) -> None:
    """The tags in the index, with how many files carry each."""
    from mediasearch import library
    from mediasearch.output import print_json

    settings = settings_of(ctx)
    daemon = _daemon(settings)
    counts = daemon.tags() if daemon else library.tag_counts(settings)
    if as_json:
        print_json(counts)
    else:
        _print_tag_counts(counts)


# -- daemon --------------------------------------------------------------------------------------


@app.command()
@handles_errors
def serve(
    ctx: typer.Context,
    paths: list[Path] = typer.Argument(None, help="Folders to watch, added to those the home remembers."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (not loopback: needs a token)."),
    port: int = typer.Option(0, "--port", help="Port (0: any free one; HOME/daemon.json says which)."),
    token: str | None = typer.Option(None, "--token", envvar="MEDIASEARCH_TOKEN", help="API token (default: random)."),
    rescan_every: str = typer.Option("1d", "--rescan-every", help="Full rescan interval: 30m, 6h, 1d, or off."),
    debounce: float = typer.Option(2.0, "--debounce", min=0.1, help="Seconds a folder must stay quiet first."),
    poll: bool = typer.Option(False, "--poll", help="Poll the folders instead of using file events."),
    poll_interval: float = typer.Option(10.0, "--poll-interval", min=0.5, help="Seconds between polls."),
    hidden: bool = typer.Option(False, "--hidden", help="Also index hidden files and folders."),
) -> None:
    """Run the daemon: watch folders, rescan on a schedule, answer queries over HTTP (Ctrl-C stops)."""
    from mediasearch.daemon import DaemonOptions, parse_interval
    from mediasearch.daemon import serve as run
    from mediasearch.indexer import IndexOptions

    watching = ctx.info_name == "watch"
    if watching and not paths:
        raise typer.BadParameter("give at least one folder to watch")
    settings = settings_of(ctx)
    options = DaemonOptions(
        roots=tuple(str(p.absolute()) for p in paths or []),
        host=host,
        port=port,
        token=token,
        rescan_every=parse_interval(rescan_every),
        debounce=debounce,
        poll=poll,
        poll_interval=poll_interval,
        index=IndexOptions(settings.frame_interval, settings.max_frames, settings.batch_size, settings.workers, hidden),
        echo=watching,
    )
    run(settings, options, _announce)
    # Everything is flushed and closed by now; tearing down torch's modules would add seconds to a stop.
    logging.shutdown()
    sys.stdout.flush()
    os._exit(0)


app.command("watch", help="The daemon, watching PATH... and logging every file it indexes on stderr.")(serve)


def _announce(info: Any) -> None:
    typer.echo(f"mediasearch daemon (pid {info.pid}) at {info.url}; token in the home's daemon.json", err=True)
    if sys.stderr.isatty():  # not into logs: the token opens the whole index
        typer.echo(f"search page: {info.url}/?token={info.token}", err=True)


# -- model ---------------------------------------------------------------------------------------


@app.command()
@handles_errors
def classify(
    ctx: typer.Context,
    files: list[Path] = typer.Argument(..., help="Images (or videos) to classify."),
    labels: str | None = typer.Option(
        None, "--labels", help="Comma-separated labels, e.g. 'cat,dog' (optional with a linear-head checkpoint)."
    ),
    top: int = typer.Option(5, "--top", min=1, help="Labels to show per file."),
    prompts: Path | None = typer.Option(None, "--prompts", help="Learned prompts (finetune --prompt-learning)."),
    as_json: bool = JSON_OPT,
) -> None:
    """Zero-shot classification with probabilities (or a fine-tuned checkpoint's linear head)."""
    from mediasearch import library
    from mediasearch.output import console, print_json

    if prompts is not None:
        from mediasearch.prompt_learning import classify_files
        from mediasearch.zeroshot import parse_labels

        settings = settings_of(ctx)
        model = library.load(settings, library.spec_from_settings(settings))
        results, errors = classify_files(model, [str(f) for f in files], parse_labels(labels or ""), prompts)
    else:
        results, errors = library.classify_files(settings_of(ctx), [str(f) for f in files], labels)
    _print_errors(errors)
    if not results:
        raise typer.Exit(1)
    if as_json:
        print_json(results)
        return
    out = console()
    for item in results:
        best = ", ".join(f"{lab['label']} {lab['prob']:.0%}" for lab in item["labels"][:top])
        out.print(f"{item['path']}: {best}", markup=False)


@app.command()
@handles_errors
def embed(
    ctx: typer.Context,
    files: list[Path] = typer.Argument(None, help="Images or videos to embed."),
    text: list[str] = typer.Option([], "--text", help="A text to embed (repeatable)."),
    as_json: bool = JSON_OPT,
) -> None:
    """Print embeddings (L2-normalised) for files and texts."""
    from mediasearch import library
    from mediasearch.output import console, print_json

    if not files and not text:
        raise typer.BadParameter("give files to embed or --text")
    rows, errors = library.embed(settings_of(ctx), [str(f) for f in files or []], text)
    _print_errors(errors)
    if not rows:
        raise typer.Exit(1)
    if as_json:
        print_json(rows)
        return
    out = console()
    for row in rows:
        vec = row["embedding"]
        head = ", ".join(f"{v:+.3f}" for v in vec[:6])
        out.print(f"{row.get('path', row.get('text'))}  dim={len(vec)}  [{head}, ...]", markup=False)


@app.command()
@handles_errors
def demo(
    ctx: typer.Context,
    folder: Path = typer.Option(Path("mediasearch-demo"), "--dir", help="Where to build the sample library."),
    as_json: bool = JSON_OPT,
) -> None:
    """Build a small sample library, index it with the bundled demo model, and run a few queries."""
    from mediasearch.demo import run_demo

    run_demo(settings_of(ctx, home=folder / "home", model="demo"), folder, as_json=as_json)


# -- fine-tuning and evaluation -----------------------------------------------------------------


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
    epochs: int = typer.Option(10, "--epochs"),
    batch_size: int = typer.Option(32, "--batch-size"),
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate (default 1e-5; the demo model 2e-3)."),
    weight_decay: float | None = typer.Option(None, "--weight-decay", help="Default 0.1; the demo model 0."),
    warmup: int | None = typer.Option(None, "--warmup", help="Warmup steps (default: a tenth of all steps)."),
    accum_steps: int = typer.Option(1, "--accum-steps", help="Batches per optimiser step (less memory)."),
    lock_image: bool = typer.Option(False, "--lock-image", help="Keep the image tower as it is."),
    lock_text: bool = typer.Option(False, "--lock-text", help="Keep the text tower as it is."),
    unfreeze_last: int | None = typer.Option(None, "--unfreeze-last", help="Train only the last N blocks."),
    patience: int = typer.Option(3, "--patience", help="Epochs without validation gain before stopping."),
    alphas: str = typer.Option("0:1:0.1", "--alphas", help="WiSE-FT α to try: 'a,b,c' or 'start:stop:step'."),
    max_reference_drop: float = typer.Option(0.02, "--max-reference-drop", help="Largest reference accuracy loss."),
    replay: int = typer.Option(0, "--replay", help="Reference images mixed into training (rehearsal)."),
    replay_distill: float = typer.Option(10.0, "--replay-distill", help="Weight of keeping their embeddings."),
    augment: bool = typer.Option(True, "--augment/--no-augment", help="Mirror, shift and scale training images."),
    head: str | None = typer.Option(None, "--head", help="'linear': also train a linear probe for classify."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Leave out missing or unreadable files."),
    restart: bool = typer.Option(False, "--restart", help="Ignore the state of an interrupted run."),
    prompt_learning: bool = typer.Option(False, "--prompt-learning", help="Learn soft prompts only (model frozen)."),
    shots: int = typer.Option(4, "--shots", min=1, help="With --prompt-learning: examples per class."),
    as_json: bool = JSON_OPT,
) -> None:
    """Fine-tune the model on your media; writes CKPT only if it beats zero-shot on held-out data."""
    if prompt_learning:
        _learn_prompts(ctx, data, out, test, shots, seed, as_json)
        return
    from mediasearch import library
    from mediasearch.finetune import FinetuneOptions, parse_alphas
    from mediasearch.finetune import finetune as run
    from mediasearch.output import print_json
    from mediasearch.tables import FinetuneProgress, finetune_table

    options = FinetuneOptions(
        out=out, test=test, reference=reference, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction,
        epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, warmup_steps=warmup,
        accum_steps=accum_steps, lock_image=lock_image, lock_text=lock_text, unfreeze_last=unfreeze_last,
        patience=patience, alphas=parse_alphas(alphas), max_reference_drop=max_reference_drop, replay=replay,
        replay_distill=replay_distill, augment=augment, head=head, skip_bad=skip_bad, restart=restart,
    )
    settings = settings_of(ctx)
    # fp32 master weights whatever the device: training and WiSE-FT must not start from rounded ones.
    base = library.load(settings, library.spec_from_settings(settings), precision="fp32")
    with FinetuneProgress(bar=sys.stderr.isatty() and not as_json, lines=not as_json) as progress:
        report = run(base, data, options, progress)
    if as_json:
        print_json(report)
    else:
        finetune_table(report)


def _learn_prompts(ctx: typer.Context, data: Path, out: Path, test: Path | None, shots: int, seed: int,
                   as_json: bool) -> None:
    """``finetune --prompt-learning``: CoOp context vectors from SHOTS examples per class, compared on --test."""
    from mediasearch import library
    from mediasearch.output import key_values, print_json
    from mediasearch.prompt_learning import PromptOptions, compare, load_prompts, train_from_set

    settings = settings_of(ctx)
    model = library.load(settings, library.spec_from_settings(settings))
    report = train_from_set(model, data, out, shots, PromptOptions(seed=seed))
    if test is not None:
        report["test_top1"] = compare(model, load_prompts(out), test)
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
    from mediasearch import library
    from mediasearch.evaluate import eval_zeroshot as run
    from mediasearch.output import print_json
    from mediasearch.tables import zeroshot_tables

    settings = settings_of(ctx)
    report = run(library.load(settings, library.spec_from_settings(settings)), sets, groups=groups, prompts=prompts)
    if as_json:
        print_json(report)
    else:
        zeroshot_tables(report)


@eval_app.command("retrieval")
@handles_errors
def eval_retrieval(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="CSV/JSONL of (path, caption), or a folder of class folders."),
    as_json: bool = JSON_OPT,
) -> None:
    """Recall@1/5/10 from images to captions and from captions to images."""
    from mediasearch import library
    from mediasearch.evaluate import eval_retrieval as run
    from mediasearch.output import print_json
    from mediasearch.tables import retrieval_table

    settings = settings_of(ctx)
    report = run(library.load(settings, library.spec_from_settings(settings)), file)
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
    from mediasearch import library
    from mediasearch.beyond_output import bias_table
    from mediasearch.bias import eval_bias as run
    from mediasearch.output import print_json
    from mediasearch.zeroshot import parse_labels

    settings = settings_of(ctx)
    model = library.load(settings, library.spec_from_settings(settings))
    report = run(model, file, parse_labels(labels), top_k=top_k, debias=debias)
    _print_errors(report["errors"])
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
    from mediasearch import library
    from mediasearch.beyond_output import ScoreProgress
    from mediasearch.generate import GenerateOptions
    from mediasearch.generate import generate as run
    from mediasearch.output import print_json

    settings = settings_of(ctx)
    model = library.load(settings, library.spec_from_settings(settings))
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


def main() -> None:
    """Console-script entry point; SIGTERM stops a command as Ctrl-C does (the store is closed cleanly).

    Once the command's work is over, either signal lets the process finish exiting with the status it
    has (a second one ends it at once).
    """
    import signal

    from mediasearch.lane import tune_openmp

    tune_openmp()  # before anything imports torch

    def interrupt(signum: int, frame: Any) -> None:
        if _WORK["over"] or signum == signal.SIGTERM:
            signal.signal(signum, signal.SIG_DFL)  # a second one ends the process at once
        if not _WORK["over"]:
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    app()
