"""``mediasearch people``: the people whose faces are in the library, and the corrections a user makes
(name, merge, take a face out, hide)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import typer

from mediasearch.cli.core import JSON_OPT, app, handles_errors, open_library

people_app = typer.Typer(
    help="People found by their faces: list, name, merge, correct, hide (faces never leave this machine).",
    invoke_without_command=True,
)
app.add_typer(people_app, name="people")

PERSON = typer.Argument(..., help="A person's id (the first column of `mediasearch people`).")


@people_app.callback()
@handles_errors
def people(
    ctx: typer.Context,
    hidden: bool = typer.Option(False, "--hidden", help="List hidden people too."),
    as_json: bool = JSON_OPT,
) -> None:
    """The people in the library, largest first: id, name, faces, files."""
    if ctx.invoked_subcommand is not None:
        return
    with open_library(ctx) as lib:
        found = lib.people(hidden=hidden)
    if as_json:
        from mediasearch.cli.output import print_json

        print_json([dataclasses.asdict(p) for p in found])
        return
    _print_people(found)


def _print_people(found: list[Any]) -> None:
    from mediasearch.cli.output import console

    out = console()
    if not found:
        out.print("no people yet: faces are found as `mediasearch index` runs")
        return
    for person in found:
        name = person.name or "[dim](no name)[/dim]"
        first = person.files[0] if person.files else ""
        more = f" and {len(person.files) - 1} more" if len(person.files) > 1 else ""
        out.print(f"[bold]{person.id:>5}[/bold]  {name}  {person.faces} face(s)  {first}{more}")


def _print_one(person: Any, as_json: bool, what: str) -> None:
    from mediasearch.cli.output import console, print_json

    if as_json:
        print_json(dataclasses.asdict(person))
    else:
        console().print(f"{what}: person {person.id} ({person.name or 'no name'}, {person.faces} face(s))")


@people_app.command("name")
@handles_errors
def name(
    ctx: typer.Context,
    person: str = PERSON,
    new_name: str = typer.Argument(..., metavar="NAME", help="The name (then `query --person NAME`)."),
    as_json: bool = JSON_OPT,
) -> None:
    """Give a person a name."""
    with open_library(ctx) as lib:
        _print_one(lib.name_person(person, new_name), as_json, "named")


@people_app.command("merge")
@handles_errors
def merge(
    ctx: typer.Context,
    keep: str = typer.Argument(..., help="The person who stays."),
    other: str = typer.Argument(..., help="The person whose faces join KEEP."),
    as_json: bool = JSON_OPT,
) -> None:
    """Make two people one (the same person found twice)."""
    with open_library(ctx) as lib:
        _print_one(lib.merge_people(keep, other), as_json, "merged into")


@people_app.command("remove-face")
@handles_errors
def remove_face(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="The file whose face was put in the wrong person."),
    face: int | None = typer.Option(None, "--face", min=0, help="Only its N-th face (0: the clearest)."),
    as_json: bool = JSON_OPT,
) -> None:
    """Take a wrong face out of its person (it becomes a person of its own)."""
    with open_library(ctx) as lib:
        moved = lib.remove_face(file, face)
    if as_json:
        from mediasearch.cli.output import print_json

        print_json([dataclasses.asdict(p) for p in moved])
        return
    for person in moved:
        _print_one(person, False, "now apart")


@people_app.command("hide")
@handles_errors
def hide(
    ctx: typer.Context,
    person: str = PERSON,
    show: bool = typer.Option(False, "--show", help="Show a hidden person again."),
    as_json: bool = JSON_OPT,
) -> None:
    """Leave a person out of the list and of hits' people."""
    with open_library(ctx) as lib:
        _print_one(lib.hide_person(person, not show), as_json, "shown" if show else "hidden")
