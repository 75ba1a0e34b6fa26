"""``mediasearch places``: the cities where the library's geotagged files were taken."""

from __future__ import annotations

import dataclasses

import typer

from mediasearch.cli.core import JSON_OPT, app, handles_errors, open_library


@app.command()
@handles_errors
def places(ctx: typer.Context, as_json: bool = JSON_OPT) -> None:
    """The places of the geotagged files (city, region, country) with how many files, most first."""
    from mediasearch.cli.output import console, print_json

    with open_library(ctx) as lib:
        rows = lib.places()
    if as_json:
        print_json([dataclasses.asdict(r) for r in rows])
        return
    out = console()
    if not rows:
        out.print("no geotagged files with a place (index a folder of photos that record where they were taken)")
        return
    from rich.table import Table

    table = Table(show_edge=False, pad_edge=False)
    for column in ("city", "region", "country", "files"):
        table.add_column(column, justify="right" if column == "files" else "left")
    for r in rows:
        table.add_row(r.city, r.region, r.country, str(r.files))
    out.print(table)
