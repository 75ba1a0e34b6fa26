"""Use cases for a cluster: indexing on Ray, creating a server collection laid out for it, and moving an
index between the embedded store and a server (docs/scale.md). :class:`LocalLibrary` exposes them."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from mediasearch.errors import StoreError
from mediasearch.library import home, models
from mediasearch.settings import Settings

if TYPE_CHECKING:
    from mediasearch.index.options import IndexOptions, IndexReport, Progress


@dataclass
class StoreCreated:
    """``store create --json``: the collection made for the settings' model and how it is laid out."""

    collection: str
    store: str
    dim: int
    shards: int
    replicas: int
    on_disk: bool
    quantization: str
    float16: bool
    bulk_load: bool


@dataclass
class Migration:
    """``store migrate --json``: each collection copied, with points written and already there."""

    source: str
    target: str
    active: str | None
    collections: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def model_loader(settings: Settings) -> Callable[[], Any]:
    """A picklable function that loads the settings' model where it runs (a Ray actor)."""
    from mediasearch.clip.loading import load_model

    return functools.partial(
        load_model,
        models.spec_from_settings(settings),
        device=settings.device,
        cache_dir=settings.cache_dir / "models",
        batch_size=settings.batch_size,
    )


def index_on_ray(
    settings: Settings,
    opened: home.Opened,
    paths: Sequence[str],
    options: IndexOptions,
    *,
    address: str | None,
    actors: int,
    tag: bool | None,
    progress: Progress | None,
) -> IndexReport:
    """One index run whose decoding and encoding run on Ray; a collection in bulk-load mode leaves it."""
    from mediasearch.index.distributed import RayOptions, encode_stage
    from mediasearch.index.failures import FailureLog
    from mediasearch.index.mounts import MountLog
    from mediasearch.index.runner import index_paths

    tagging = replace(settings, tagging=tag) if tag is not None else settings
    tagger = models.index_tagger(tagging, opened.store, opened.model)
    server = (settings.qdrant_url, settings.qdrant_api_key) if settings.qdrant_url else None
    stage = encode_stage(model_loader(settings), RayOptions(address=address, actors=actors, server=server))
    own = home.own_folders(settings)
    failures, mounts = FailureLog(home.failures_path(settings)), MountLog(home.mounts_path(settings))
    report = index_paths(
        list(paths), opened.model, opened.store, options, progress, tagger, encode=stage, exclude=own,
        failures=failures, mounts=mounts,
    )
    if getattr(opened.store, "in_bulk_load", False) and not report.failed:
        opened.store.set_bulk_load(False)  # type: ignore[attr-defined]  # a QdrantStore
    return report


def create_store(settings: Settings, model: Any, options: Any) -> str:
    """Create the settings' model's collection on the server with ``options`` (CollectionOptions)."""
    from mediasearch.store.base import collection_name
    from mediasearch.store.collections import create_collection

    collection = collection_name(model.spec.key())
    create_collection(
        collection=collection,
        dim=model.dim,
        options=options,
        qdrant_url=settings.qdrant_url,
        api_key=settings.qdrant_api_key,
    )
    return collection


def migrate(
    settings: Settings, to: str, *, batch: int = 256, on_page: Callable[[int], None] | None = None
) -> Migration:
    """Copy every collection of the settings' store to ``to`` ("edge": the home's embedded store, or a
    server URL) and make the same one active there. Resumable: run it again after a kill."""
    from mediasearch.store.collections import active_collection, list_collections, open_store, set_active_collection
    from mediasearch.store.migrate import copy_points

    started = time.perf_counter()
    source = home.store_kwargs(settings)
    target = {**source, "qdrant_url": None if to == "edge" else to}
    if source["qdrant_url"] == target["qdrant_url"]:
        raise StoreError(f"the index is already in {to}: pass --qdrant-url to migrate from a server")
    names = list_collections(**source)
    if not names:
        raise StoreError(f"nothing is indexed in {_where(source)} yet: nothing to migrate")
    active = active_collection(**source)
    done = Migration(_where(source), _where(target), active)
    for name in names:
        with open_store(collection=name, dim=None, create=False, **source) as src:
            with open_store(collection=name, dim=src.dim, create=True, **target) as dst:
                copied = copy_points(src, dst, batch=batch, on_page=on_page)
                done.collections.append(
                    {"collection": name, "points": dst.count(), "copied": copied.copied, "skipped": copied.skipped}
                )
    if active is not None:
        set_active_collection(collection=active, **target)
    done.seconds = round(time.perf_counter() - started, 3)
    return done


def _where(kwargs: dict[str, Any]) -> str:
    return f"qdrant:{kwargs['qdrant_url']}" if kwargs["qdrant_url"] else f"edge:{kwargs['home']}"
