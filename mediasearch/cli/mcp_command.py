"""`mediasearch mcp`: the library for assistants, as an MCP server over stdio (the optional `mcp` extra)."""

from __future__ import annotations

import typer

from mediasearch.cli.core import app, handles_errors, settings_of


@app.command("mcp")
@handles_errors
def mcp(
    ctx: typer.Context,
    allow_index: bool = typer.Option(
        False, "--allow-index", help="Also let the assistant index and forget folders (read-only otherwise)."
    ),
) -> None:
    """Serve search, similar, status and tags to an assistant over MCP (stdio); thumbnails as resources."""
    from mediasearch.serve.mcp import run

    run(settings_of(ctx), allow_index=allow_index)
