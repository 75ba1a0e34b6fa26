"""``text``: what is written in pictures and in videos' frames (recognised text, OCR)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from mediasearch.cli.core import JSON_OPT, app, handles_errors, open_library
from mediasearch.errors import MediaSearchError


@app.command()
@handles_errors
def text(
    ctx: typer.Context,
    files: list[Path] = typer.Argument(..., help="Pictures or videos (indexed or not)."),
    as_json: bool = JSON_OPT,
) -> None:
    """The text written in FILES: lines with confidence and box (and time, in a video).

    An indexed file answers from the index once its OCR pass is done; any other file is read now.
    """
    from mediasearch.cli.output import console, error_line, print_json

    results: list[dict[str, Any]] = []
    with open_library(ctx) as lib:
        for file in files:
            try:
                results.append(lib.text(file).to_json())
            except MediaSearchError as exc:
                results.append({"path": str(file), "error": str(exc)})
    if as_json:
        print_json(results)
    else:
        out = console()
        for result in results:
            if "error" in result:
                error_line(result["error"])
                continue
            _print_file(out, result)
    if all("error" in r for r in results):
        raise typer.Exit(1)


def _print_file(out: Any, result: dict[str, Any]) -> None:
    from rich.markup import escape

    from mediasearch.cli.output import file_link

    lines = result["lines"]
    out.print(f"{file_link(result['path'])}  [dim]{len(lines)} lines ({result['source']})[/dim]")
    for line in lines:
        at = f"{line['timestamp']:7.1f}s  " if line["timestamp"] is not None else ""
        box = ",".join(f"{v:.2f}" for v in line["box"])
        out.print(f"  {at}[dim]{line['conf']:.2f}  {escape(f'[{box}]')}[/dim]  {escape(line['text'])}")
