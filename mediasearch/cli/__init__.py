"""The command line (Typer): ``app`` with every command registered, and ``main`` for the console script."""

from mediasearch.cli import (
    commands,
    lab_commands,
    mcp_command,
    organise_commands,
    people_commands,
    places_commands,
    store_commands,
    text_commands,
)
from mediasearch.cli.core import app, main

__all__ = [
    "app",
    "commands",
    "lab_commands",
    "main",
    "mcp_command",
    "organise_commands",
    "people_commands",
    "places_commands",
    "store_commands",
    "text_commands",
]
