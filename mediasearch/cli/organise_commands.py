"""Commands that organise a library: ``duplicates`` (exact and near copies)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer

from mediasearch.cli.core import JSON_OPT, app, handles_errors, open_library


@app.command()
@handles_errors
def duplicates(
    ctx: typer.Context,
    paths: list[Path] = typer.Argument(None, help="Only indexed files under these folders (or these files)."),
    threshold: float | None = typer.Option(
        None, "--threshold", min=0.0, max=1.0, help="Pixel similarity a near copy needs, 0..1 (default 0.95)."
    ),
    as_json: bool = JSON_OPT,
) -> None:
    """Groups of copies: byte-identical files, and resized, cropped or re-encoded ones (largest first)."""
    from mediasearch.cli.output import console, file_link, print_json

    with open_library(ctx) as lib:
        groups = lib.duplicates(paths or [], threshold=threshold)
    if as_json:
        print_json([dataclasses.asdict(g) for g in groups])
        return
    out = console()
    if not groups:
        out.print("no duplicates")
        return
    for n, group in enumerate(groups, 1):
        out.print(f"[bold]{n}.[/bold] {group.kind}, {len(group.paths)} files, similarity {group.similarity:.3f}")
        for path in group.paths:
            out.print(f"   {file_link(path)}")
