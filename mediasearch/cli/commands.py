"""The library's commands: index, forget, status, query, similar, tag, tags, classify, embed, serve, demo.

Each parses its options, calls :class:`mediasearch.Library` (which goes through the daemon when one owns
the home), and prints.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from pathlib import Path
from typing import Any

import typer

from mediasearch import queryspec
from mediasearch.cli.core import JSON_OPT, app, handles_errors, open_library, print_errors, settings_of
from mediasearch.cli.query_options import spec_options
from mediasearch.errors import ConfigError

# -- indexing ------------------------------------------------------------------------------------


@app.command()
@handles_errors
def index(
    ctx: typer.Context,
    paths: list[Path] = typer.Argument(..., help="Folders (or files) to bring the index in step with."),
    frame_interval: float | None = typer.Option(None, help="Seconds between sampled video frames."),
    max_frames: int | None = typer.Option(None, help="At most this many frames per video."),
    batch_size: int | None = typer.Option(None, help="Images per model batch (0: chosen for the device)."),
    workers: int | None = typer.Option(
        None, help="Decoding threads, and worker processes of the OCR and faces pass (0: automatic)."
    ),
    hidden: bool = typer.Option(False, "--hidden", help="Also index hidden files and folders."),
    exact_times: bool = typer.Option(
        False, "--exact-times", help="Sample videos at exactly every interval, not at keyframes near it."
    ),
    tag: bool = typer.Option(False, "--tag", help="Tag new items with the built-in vocabulary."),
    retry_failed: bool = typer.Option(
        False, "--retry-failed", help="Decode again the files that failed before, though they are unchanged."
    ),
    ocr: bool | None = typer.Option(None, "--ocr/--no-ocr", help="Recognise text in pictures (off deletes it)."),
    faces: bool | None = typer.Option(None, "--faces/--no-faces", help="Find faces and people (off deletes them)."),
    ray: bool = typer.Option(False, "--ray", help="Decode and encode on Ray (pip install 'mediasearch[ray]')."),
    ray_address: str | None = typer.Option(None, help="Ray cluster to join (implies --ray; default: a local Ray)."),
    ray_actors: int = typer.Option(0, help="Encoder actors on Ray (0: one per GPU, or one)."),
    as_json: bool = JSON_OPT,
) -> None:
    """Add, update and remove index entries to match the folders."""
    from mediasearch.cli.output import RichProgress, key_values, print_json

    overrides = {"frame_interval": frame_interval, "max_frames": max_frames, "batch_size": batch_size}
    overrides |= {"ocr": ocr, "faces": faces}
    with open_library(ctx, **overrides, workers=workers, tagging=tag or None) as lib:
        given = [(name, on) for name, on in (("ocr", ocr), ("faces", faces)) if on is not None]
        if given and lib.daemon is not None:  # the daemon runs its signals by its own settings
            switches = " ".join(f"--{'' if on else 'no-'}{name}" for name, on in given)
            wanted = ", ".join(f"{name} = {str(on).lower()}" for name, on in given)
            raise ConfigError(
                f"{switches} cannot reach the daemon serving this home (pid {lib.daemon.get('pid')}), which keeps the "
                f"settings it started with: set {wanted} in {lib.settings.config_path} and restart it "
                "(`mediasearch serve`), or stop it and index here"
            )
        progress = RichProgress() if sys.stderr.isatty() and not as_json else None
        ray_kwargs = {"ray": ray, "ray_address": ray_address, "ray_actors": ray_actors}
        flags = {"hidden": hidden, "exact_times": exact_times, "retry_failed": retry_failed}
        report = lib.index(paths, **flags, progress=progress, **ray_kwargs)
    data = report.to_json()
    if as_json:
        print_json(data)
        return
    key_values("indexed", [(k, v) for k, v in data.items() if k != "errors"])
    print_errors(data["errors"])


@app.command()
@handles_errors
def forget(ctx: typer.Context, path: Path = typer.Argument(...), as_json: bool = JSON_OPT) -> None:
    """Drop a folder (or file) and everything under it from the index."""
    from mediasearch.cli.output import console, print_json

    with open_library(ctx) as lib:
        dropped = lib.forget(path)
    if as_json:
        print_json({"path": str(path.absolute()), "files": dropped})
    else:
        console().print(f"forgot {dropped} files under {path.absolute()}")


@app.command()
@handles_errors
def status(ctx: typer.Context, as_json: bool = JSON_OPT) -> None:
    """What is indexed, by which model, where, the last run and its failures."""
    from mediasearch.cli.output import key_values, print_json

    with open_library(ctx) as lib:
        data = dataclasses.asdict(lib.status())
    if as_json:
        print_json(data)
        return
    model = data["model"] or {}
    rows = [(k, data[k]) for k in ("home", "files", "images", "videos", "frames", "store")]
    if model:
        rows.append(("model", f"{model.get('name', '-')} ({model.get('pretrained') or 'bundled weights'})"))
    last = data["last_run"] or {}
    if last:
        shown = (k for k in last if k not in ("collection", "skipped_extensions"))
        rows.append(("last run", ", ".join(f"{k}={last[k]}" for k in shown)))
    if data.get("skipped_extensions"):  # not failures: files of types mediasearch does not read
        by_ext = data["skipped_extensions"].items()
        rows.append(("skipped (not media)", ", ".join(f".{ext} {count}" for ext, count in by_ext)))
    signals = data.get("enrichers") or {}
    if signals:
        rows.append(("signals", ", ".join(f"{k} {v['done']}/{v['done'] + v['pending']}" for k, v in signals.items())))
    if data.get("daemon"):
        info = data["daemon"]
        rows.append(("daemon", f"pid {info['pid']} at {info['url']}, watching {len(info['roots'])} folders"))
    key_values("mediasearch", rows)
    print_errors(data["failures"])


# -- search --------------------------------------------------------------------------------------


@app.command()
@handles_errors
@spec_options(queryspec.QUERY_FIELDS, argument="text")
def query(
    ctx: typer.Context,
    paths_only: bool = typer.Option(False, "--paths", help="One path per line."),
    as_json: bool = JSON_OPT,
    *,
    values: dict[str, Any],
) -> None:
    """Find items by text, by example image, or both; --not subtracts. Dates, places and people in the
    text are read out of it (--explain shows how; --literal turns it off)."""
    from mediasearch.cli.output import print_json
    from mediasearch.library.wire import to_json

    with open_library(ctx) as lib:
        if values["explain"]:
            parsed = lib.query(**values)
            print_json(to_json(parsed))
            return
        if values["text"] and not (values["literal"] or as_json or paths_only):
            _print_reading(lib.query(**{**values, "explain": True}))
        hits = lib.query(**values)
    text_only = bool(values["text"] or values["also"]) and not (values["image"] or values["not_image"])
    _print_hits(hits, as_json, paths_only, title=values["text"] or "", fold=text_only)


def _print_reading(reading: Any) -> None:
    """The parse of a one-line query, in one dim line above its results (when it found more than text)."""
    from rich.markup import escape

    from mediasearch.cli.output import console, reading_line

    line = reading_line(reading)
    if line:
        console().print(f"[dim]{escape(line)}[/dim]")


def _print_hits(hits: list[Any], as_json: bool, paths_only: bool, title: str = "", *, fold: bool = False) -> None:
    from mediasearch.cli.output import hits_table, print_json

    if as_json:
        print_json([h.to_json() for h in hits])
    elif paths_only:
        for hit in hits:
            sys.stdout.write(hit.path + "\n")
    else:
        hits_table(hits, title, fold=fold)


@app.command()
@handles_errors
@spec_options(queryspec.SIMILAR_FIELDS)
def similar(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="An indexed file, or any image or video."),
    paths_only: bool = typer.Option(False, "--paths", help="One path per line."),
    as_json: bool = JSON_OPT,
    *,
    values: dict[str, Any],
) -> None:
    """Items that look like FILE, with the filters of `query`."""
    with open_library(ctx) as lib:
        hits = lib.similar(file, **values)
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
    from mediasearch.cli.output import key_values, print_json

    with open_library(ctx) as lib:
        result = dataclasses.asdict(lib.tag(vocab, prompts))
    if as_json:
        print_json(result)
        return
    key_values("tagged", [("files", result["files"]), ("with tags", result["tagged"])])
    _print_tag_counts(result["tags"])


def _print_tag_counts(counts: dict[str, int]) -> None:
    from rich.markup import escape
    from rich.table import Table

    from mediasearch.cli.output import console

    table = Table("tag", "files")
    for name, n in counts.items():
        table.add_row(escape(name), str(n))
    console().print(table)


@app.command("tags")
@handles_errors
def list_tags(ctx: typer.Context, as_json: bool = JSON_OPT) -> None:
    """The tags in the index, with how many files carry each."""
    from mediasearch.cli.output import print_json

    with open_library(ctx) as lib:
        counts = lib.tags()
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
    token_file: Path | None = typer.Option(
        None, "--token-file", help="File holding the admin token (else MEDIASEARCH_TOKEN, else random)."
    ),
    read_token_file: Path | None = typer.Option(
        None, "--read-token-file", help="File holding the read token (else MEDIASEARCH_READ_TOKEN, else random)."
    ),
    allow_host: list[str] = typer.Option(
        [], "--allow-host", help="A Host name to answer besides loopback's and this machine's (repeatable)."
    ),
    rescan_every: str = typer.Option("1d", "--rescan-every", help="Full rescan interval: 30m, 6h, 1d, or off."),
    debounce: float = typer.Option(2.0, "--debounce", min=0.1, help="Seconds a folder must stay quiet first."),
    poll: bool = typer.Option(False, "--poll", help="Poll the folders instead of using file events."),
    poll_interval: float = typer.Option(10.0, "--poll-interval", min=0.5, help="Seconds between polls."),
    hidden: bool = typer.Option(False, "--hidden", help="Also index hidden files and folders."),
) -> None:
    """Run the daemon: watch folders, rescan on a schedule, answer queries over HTTP (Ctrl-C stops)."""
    from mediasearch.library.requests import IndexOptions
    from mediasearch.serve.daemon import serve as run
    from mediasearch.serve.options import DaemonOptions, parse_interval
    from mediasearch.serve.security import read_token_file as token_in

    watching = ctx.info_name == "watch"
    if watching and not paths:
        raise typer.BadParameter("give at least one folder to watch")
    settings = settings_of(ctx)
    options = DaemonOptions(
        roots=tuple(str(p.absolute()) for p in paths or []),
        host=host,
        port=port,
        # Tokens from files or the environment: a command line is readable by every user of the machine.
        token=token_in(token_file) if token_file else os.environ.get("MEDIASEARCH_TOKEN") or None,
        read_token=token_in(read_token_file) if read_token_file else os.environ.get("MEDIASEARCH_READ_TOKEN") or None,
        allowed_hosts=tuple(allow_host),
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
    typer.echo(f"mediasearch daemon (pid {info.pid}) at {info.url}; tokens in the home's daemon.json", err=True)
    if sys.stderr.isatty():  # not into logs: the read token opens the whole library
        typer.echo(f"search page: {info.url}/?token={info.read_token or info.token}", err=True)


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
    from mediasearch.cli.output import console, print_json
    from mediasearch.library import Library

    errors: list[Any] = []
    wanted = [lab.strip() for lab in labels.split(",")] if labels is not None else None
    with Library.open(settings=settings_of(ctx), use_daemon=False) as lib:  # no store: no daemon needed
        results = lib.classify(files, wanted, prompts=prompts, on_error=errors.append)
    print_errors(errors)
    if not results:
        raise typer.Exit(1)
    if as_json:
        print_json([dataclasses.asdict(r) for r in results])
        return
    out = console()
    for item in results:
        best = ", ".join(f"{lab.label} {lab.prob:.0%}" for lab in item.labels[:top])
        out.print(f"{item.path}: {best}", markup=False)


@app.command()
@handles_errors
def embed(
    ctx: typer.Context,
    files: list[Path] = typer.Argument(None, help="Images or videos to embed."),
    text: list[str] = typer.Option([], "--text", help="A text to embed (repeatable)."),
    as_json: bool = JSON_OPT,
) -> None:
    """Print embeddings (L2-normalised) for files and texts."""
    from mediasearch.cli.output import console, print_json
    from mediasearch.library import Library

    if not files and not text:
        raise typer.BadParameter("give files to embed or --text")
    errors: list[Any] = []
    with Library.open(settings=settings_of(ctx), use_daemon=False) as lib:  # no store: no daemon needed
        embedded = lib.embed_images(files or [], on_error=errors.append) + lib.embed_texts(text)
    rows = [e.to_json() for e in embedded]
    print_errors(errors)
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
    from mediasearch.cli.demo import run_demo

    run_demo(settings_of(ctx, home=folder / "home", model="demo"), folder, as_json=as_json)


# -- fine-tuning and evaluation -----------------------------------------------------------------
