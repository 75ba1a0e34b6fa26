"""``mediasearch store create|migrate``: collections laid out for a Qdrant cluster, and moving an index
between the embedded store and a server (docs/scale.md)."""

from __future__ import annotations

import dataclasses

import typer

from mediasearch.cli.core import JSON_OPT, app, handles_errors, open_library

store_app = typer.Typer(help="Create a server collection for a cluster, or move the index.", no_args_is_help=True)
app.add_typer(store_app, name="store")


@store_app.command("create")
@handles_errors
def store_create(
    ctx: typer.Context,
    shards: int = typer.Option(1, "--shards", help="Shards to spread the points over (at least one per node)."),
    replicas: int = typer.Option(1, "--replicas", help="Copies of each shard (2: a node can fail)."),
    on_disk: bool = typer.Option(False, "--on-disk", help="Vectors and payloads memory-mapped from disk."),
    quantization: str = typer.Option("none", "--quantization", help="int8, binary or none: a small copy in RAM."),
    float16: bool = typer.Option(False, "--float16", help="Store vectors in half precision (half the size)."),
    bulk_load: bool = typer.Option(
        False, "--bulk-load", help="Build no HNSW graph until the first `index --ray` completes."
    ),
    as_json: bool = JSON_OPT,
) -> None:
    """Create the model's collection on the Qdrant server of --qdrant-url."""
    from mediasearch.cli.output import key_values, print_json

    with open_library(ctx) as lib:
        created = lib.create_store(
            shards=shards,
            replicas=replicas,
            on_disk=on_disk,
            quantization=quantization,
            float16=float16,
            bulk_load=bulk_load,
        )
    data = dataclasses.asdict(created)
    if as_json:
        print_json(data)
    else:
        key_values("created", list(data.items()))


@store_app.command("migrate")
@handles_errors
def store_migrate(
    ctx: typer.Context,
    to: str = typer.Option(..., "--to", help="A Qdrant URL, or 'edge' for this home's embedded store."),
    batch: int = typer.Option(256, "--batch", help="Points per page."),
    as_json: bool = JSON_OPT,
) -> None:
    """Copy the index (every model's collection) to a server or back; run again to resume."""
    from mediasearch.cli.output import key_values, print_json

    with open_library(ctx) as lib:
        moved = lib.migrate(to, batch=batch)
    data = dataclasses.asdict(moved)
    if as_json:
        print_json(data)
        return
    key_values("migrated", [(k, v) for k, v in data.items() if k != "collections"])
    for row in data["collections"]:
        key_values(row["collection"], [(k, v) for k, v in row.items() if k != "collection"])
