"""Which store and collection to open: the embedded shard or a server, created if asked, and the active
collection (the one queries use; a new model's collection becomes active once a run of it completes).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mediasearch.errors import StoreError, redact_url
from mediasearch.store.base import ACTIVE_ALIAS, COLLECTION_PREFIX, VALID_NAME, Store, write_small_file
from mediasearch.store.edge import edge_store_dir, open_edge
from mediasearch.store.server import (
    CollectionOptions,
    create_server_collection,
    open_server,
    release_client,
    server_client,
    server_errors,
)


def open_store(
    *,
    home: Path,
    collection: str,
    dim: int | None,
    qdrant_url: str | None = None,
    api_key: str | None = None,
    create: bool = True,
    wait_s: float = 5.0,
    indexed: Sequence[str] | None = None,
) -> Store:
    """Open (or create) a collection: an Edge shard under ``home``, or one on a Qdrant server.

    ``dim=None`` opens an existing collection at whatever size it has. A different ``dim`` from
    the stored one raises ModelMismatchError. An Edge store held by another process is waited
    for up to ``wait_s`` seconds, then StoreLockedError. ``indexed`` names the payload fields to index
    (None: every field the media filters use).
    """
    if not VALID_NAME.fullmatch(collection):
        raise StoreError(f"invalid collection name {collection!r}: use letters, digits, '_', '-' and '.'")
    if qdrant_url:
        return open_server(qdrant_url, api_key, collection, dim, create, indexed)
    return open_edge(Path(home), collection, dim, create, wait_s, indexed)


def active_collection(*, home: Path, qdrant_url: str | None = None, api_key: str | None = None) -> str | None:
    """The collection that queries use (set when an index build completes), or None."""
    if qdrant_url:
        client = server_client(qdrant_url, api_key)
        try:
            with server_errors(qdrant_url, "reading aliases"):
                aliases = client.get_aliases().aliases
        finally:
            release_client(qdrant_url, client)
        return next((a.collection_name for a in aliases if a.alias_name == ACTIVE_ALIAS), None)
    path = edge_store_dir(Path(home)) / "ACTIVE"
    try:
        name = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return name or None


def set_active_collection(
    *, home: Path, collection: str, qdrant_url: str | None = None, api_key: str | None = None
) -> None:
    """Point queries at ``collection`` (atomically: a query sees the old one or the new one)."""
    if not qdrant_url:
        store_dir = edge_store_dir(Path(home))
        if not (store_dir / collection / "edge_config.json").is_file():
            raise StoreError(f"cannot make {collection} active: there is no such store in {store_dir}")
        write_small_file(store_dir / "ACTIVE", collection + "\n")
        return
    from qdrant_client import models as m

    client = server_client(qdrant_url, api_key)
    try:
        with server_errors(qdrant_url, "switching the active collection"):
            if not client.collection_exists(collection):
                raise StoreError(
                    f"cannot make {collection} active: Qdrant {redact_url(qdrant_url)} has no such collection"
                )
            current = [a for a in client.get_aliases().aliases if a.alias_name == ACTIVE_ALIAS]
            drop = m.DeleteAliasOperation(delete_alias=m.DeleteAlias(alias_name=ACTIVE_ALIAS))
            create = m.CreateAliasOperation(
                create_alias=m.CreateAlias(collection_name=collection, alias_name=ACTIVE_ALIAS)
            )
            # One request, so the alias never points nowhere.
            client.update_collection_aliases(change_aliases_operations=[drop, create] if current else [create])
    finally:
        release_client(qdrant_url, client)


def list_collections(*, home: Path, qdrant_url: str | None = None, api_key: str | None = None) -> list[str]:
    """Names of mediasearch collections: Edge shards under ``home``, or server collections
    whose name starts with ``COLLECTION_PREFIX``."""
    if qdrant_url:
        client = server_client(qdrant_url, api_key)
        try:
            with server_errors(qdrant_url, "listing collections"):
                names = [c.name for c in client.get_collections().collections]
        finally:
            release_client(qdrant_url, client)
        return sorted(n for n in names if n.startswith(COLLECTION_PREFIX))
    store_dir = edge_store_dir(Path(home))
    if not store_dir.is_dir():
        return []
    return sorted(p.name for p in store_dir.iterdir() if (p / "edge_config.json").is_file())


def create_collection(
    *,
    collection: str,
    dim: int,
    options: CollectionOptions,
    qdrant_url: str | None,
    api_key: str | None = None,
    home: Path | None = None,
) -> None:
    """Create a server collection laid out for a cluster (shards, replicas, on-disk, quantization,
    bulk load). An Edge store is one local shard with none of these: that is a StoreError."""
    if not VALID_NAME.fullmatch(collection):
        raise StoreError(f"invalid collection name {collection!r}: use letters, digits, '_', '-' and '.'")
    if not qdrant_url:
        raise StoreError(
            "shards, replicas, on-disk vectors and quantization are for a Qdrant server: "
            "pass --qdrant-url (the embedded store is created by the first `mediasearch index`)"
        )
    create_server_collection(qdrant_url, api_key, collection, dim, options)
