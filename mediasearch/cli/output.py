"""Rendering for people (rich) and scripts (JSON). Only front ends call this."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from mediasearch.library.types import Hit

# A text query's results below this calibrated score are "weaker": the table puts them under a rule
# line (the web page folds them). The same 0.5 that `--min-score` documents as "describes it".
WEAK_BELOW = 0.5

def console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def print_json(data: Any) -> None:
    """One JSON document on stdout."""
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=1) + "\n")
    sys.stdout.flush()


def clock(seconds: float | None) -> str:
    """123.4 → '0:02:03'."""
    if seconds is None:
        return ""
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def moment(hit: Hit) -> str:
    """'@ 0:01:23 (0:01:20-0:01:31)' for a video hit, '' for an image."""
    if hit.kind != "video" or hit.timestamp is None:
        return ""
    text = f"@ {clock(hit.timestamp)}"
    if hit.start is not None and hit.end is not None:
        text += f" ({clock(hit.start)}-{clock(hit.end)})"
    return text


def file_link(path: str) -> str:
    """Rich markup for a clickable file:// link showing the (escaped) path."""
    from rich.markup import escape

    try:
        uri = Path(path).as_uri()
    except ValueError:
        return escape(path)
    return f"[link={uri}]{escape(path)}[/link]"


def shown(text: str) -> str:
    """Text from outside (a path, a query) as rich markup that prints it literally, controls escaped."""
    from rich.markup import escape

    from mediasearch.media.discover import display_path

    return escape(display_path(text))


def hits_table(hits: Sequence[Hit], title: str = "", *, fold: bool = False) -> None:
    """A results table: score, match, kind, path (link) with the video moment, tags.

    ``fold`` (text queries): the matches (calibrated ≥ WEAK_BELOW) first, then a rule line, then the
    weaker results, dimmed; ``--json`` lists every hit as it is.
    """
    from rich.table import Table

    if not hits:
        console().print("[yellow]no results[/yellow]")
        return
    # A hit whose recognised text holds the query's words (``text``) is a match whatever CLIP thinks.
    strong = [h for h in hits if not fold or h.calibrated >= WEAK_BELOW or h.text]
    weak = [h for h in hits if fold and h.calibrated < WEAK_BELOW and not h.text]
    table = Table(title=shown(title) if title else None, show_lines=False, header_style="bold")
    table.add_column("score", justify="right")
    table.add_column("match", justify="right")
    table.add_column("kind")
    table.add_column("path", overflow="fold")
    table.add_column("tags", overflow="fold")
    for hit in strong:
        _hit_row(table, hit)
    if weak:
        table.add_section()  # the cut: the rule line under the last match
        for hit in weak:
            _hit_row(table, hit, style="dim")
        matches = f"{len(strong)} {'match' if len(strong) == 1 else 'matches'}" if strong else "no good match"
        table.caption = f"{matches}; below the line {len(weak)} weaker (match < {WEAK_BELOW:.0%})"
    console().print(table)


def _hit_row(table: Any, hit: Hit, style: str | None = None) -> None:
    from rich.markup import escape

    where = file_link(hit.path)
    if hit.kind == "video":
        where += f" {moment(hit)}"
    if hit.place:
        where += f" [dim]· {escape(hit.place)}[/dim]"
    if hit.text:  # the recognised text that matched (OCR)
        where += f"\n[italic]“{escape(str(hit.text))}”[/italic]"
    table.add_row(
        f"{hit.score:.3f}", f"{hit.calibrated:.0%}", hit.kind, where, escape(", ".join(hit.tags)), style=style
    )


def key_values(title: str, rows: Sequence[tuple[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title=title, show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, shown(str(value)))
    console().print(table)


def error_line(message: str) -> None:
    """The one red line a failed command prints on stderr."""
    console(stderr=True).print(f"[red]error:[/red] {shown(message)}", soft_wrap=True)


class RichProgress:
    """The indexer's progress as a rich bar on stderr (files, frames, rate, ETA)."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.frames = 0
        self.bar = Progress(
            TextColumn("indexing"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[frames]} frames"),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=console(stderr=True),
            transient=True,
        )
        self.task: Any = None

    def start(self, files: int) -> None:
        self.bar.start()
        self.task = self.bar.add_task("index", total=files, frames=0, rate="")

    def advance(self, files: int = 0, frames: int = 0) -> None:
        self.frames += frames
        task = self.bar.tasks[0]
        rate = f"{task.speed:.1f} files/s" if task.speed else ""
        self.bar.update(self.task, advance=files, frames=self.frames, rate=rate)

    def finish(self) -> None:
        self.bar.stop()


def reading_line(reading: Any) -> str | None:
    """How a one-line query was read (``query --explain``), as one line: None when only text was found."""
    parts = []
    if reading.after or reading.before:
        parts.append(f"{reading.after or '…'} – {reading.before or '…'}")
    if reading.place is not None:
        parts.append(f"{reading.place.name} ({reading.place.km:g} km)")
    parts += [", ".join(reading.people)] if reading.people else []
    parts += [f"{reading.kind}s"] if reading.kind else []
    parts += [f"text {' '.join(reading.ocr)!r}"] if reading.ocr else []
    orders = {"date": "newest first", "oldest": "oldest first"}
    parts += [orders.get(reading.sort, reading.sort)] if reading.sort else []
    if not parts:
        return None
    return " · ".join([f"“{reading.text}”" if reading.text else "(filters only)", *parts])
