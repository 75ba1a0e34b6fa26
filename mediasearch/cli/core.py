"""The command line's core: the Typer app, global options, one place that turns errors into exit codes.

Commands live in ``commands`` (the library's use cases) and ``lab_commands`` (fine-tuning, evaluation,
generation); each parses its options, calls :class:`mediasearch.Library`, and prints. Nothing heavy is
imported at start-up.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import typer

from mediasearch import __version__
from mediasearch.errors import MediaSearchError, redact

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
        from mediasearch.cli.output import error_line

        try:
            return fn(*args, **kwargs)
        except MediaSearchError as exc:
            error_line(redact(str(exc)))
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
    from mediasearch.media.discover import display_path

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


def open_library(ctx: typer.Context, **overrides: Any) -> Any:
    """The home's library: through its daemon when one runs (it owns the store), else opened here."""
    from mediasearch.library import Library

    return Library.open(settings=settings_of(ctx, **overrides))


def print_errors(errors: Sequence[Any]) -> None:
    """Files a command could not read, one yellow line each on stderr (``errors``: FileError or dicts).

    "failed", not "skipped": that word is the count of files passed over for their extension."""
    from mediasearch.cli.output import console, shown

    out = console(stderr=True)
    for err in errors:
        path, reason = (err["path"], err["error"]) if isinstance(err, dict) else (err.path, err.error)
        out.print(f"[yellow]failed[/yellow] {shown(path)}: {shown(reason)}", soft_wrap=True)


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
