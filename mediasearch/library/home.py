"""One home: its paths and state files, which collection and model to open for indexing or for queries
(with the store's schema brought up to date), and what ``status`` says about it.

Loading, encoding and classifying with the model are in ``library.models``; the HNSW build in a child
process in ``library.search_graph``. The use cases (``library.local``) and the daemon call these; they
never print or exit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, astuple, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mediasearch.clip.spec import ModelSpec
from mediasearch.errors import ModelMismatchError, StoreError, StoreLockedError
from mediasearch.fsutil import atomic_write
from mediasearch.library import models
from mediasearch.settings import DEFAULT_MODEL, Settings

if TYPE_CHECKING:
    from mediasearch.clip.model import ClipModel
    from mediasearch.store.base import Store

STATE_FILE = "state.json"
FAILURES_FILE = "failures.json"
MOUNTS_FILE = "mounts.json"
OWN_FOLDERS = ("store", "cache", "logs")  # what a home holds besides small files; media may live beside them


def own_folders(settings: Settings) -> list[Path]:
    """The home's own folders (the store, caches with their thumbnail JPEGs, logs): a watcher whose root
    holds the home ignores changes there, and only there (a media folder inside the home is watched)."""
    return [settings.home / name for name in OWN_FOLDERS] + [settings.cache_dir]


def store_kwargs(settings: Settings) -> dict[str, Any]:
    """How to reach the home's store (its folder, or a server and its key)."""
    return {"home": settings.home, "qdrant_url": settings.qdrant_url, "api_key": settings.qdrant_api_key}


@dataclass
class Opened:
    """A model and the store built with it."""

    model: ClipModel
    store: Store
    collection: str
    activate_when_done: bool

    def close(self) -> None:
        self.store.close()


def index_settings(settings: Settings) -> Settings:
    """Without --model, indexing goes on with the model that built the index queries use (the default
    model only for a home with nothing indexed yet): `index` after `mediasearch demo` adds to the demo
    index, as the daemon does, instead of starting a second index with the default model."""
    from mediasearch.store.collections import active_collection, open_store

    if settings.model is not None:
        return settings
    active = active_collection(**store_kwargs(settings))
    if active is None:
        return settings
    try:
        with open_store(collection=active, dim=None, create=False, **store_kwargs(settings)) as store:
            built = (store.get_meta() or {}).get("model") or {}
    except StoreLockedError:
        raise
    except StoreError:
        return settings  # the active collection is gone: the default model starts a new one
    if not built.get("name"):
        return settings
    return replace(settings, model=built["name"], pretrained=built.get("pretrained"))


def open_for_index(settings: Settings, *, need_model: bool = True) -> Opened:
    """The settings' model and its collection (created, with the model recorded, if new); without a
    model in the settings, the one that built the home's index (``index_settings``).

    ``need_model=False``: when the collection exists, open it without loading the model (``model`` is
    None; the collection's name derives from the model's key, which needs no torch).
    """
    from mediasearch.clip.loading import resolve_spec
    from mediasearch.index.schema import new_meta
    from mediasearch.store.base import collection_name
    from mediasearch.store.collections import active_collection, list_collections, open_store

    settings = index_settings(settings)
    spec = resolve_spec(models.spec_from_settings(settings))
    collection = collection_name(spec.key())
    model: ClipModel | None = None
    if need_model or collection not in list_collections(**store_kwargs(settings)):
        model = models.load(settings, spec)
        collection = collection_name(model.spec.key())
    store = open_store(collection=collection, dim=model.dim if model else None, create=True, **store_kwargs(settings))
    if store.get_meta() is None:
        model = model or models.load(settings, spec)
        store.set_meta({"model": model.info(), "created": time.time(), **new_meta()})
    else:
        _upgraded(store)
    active = active_collection(**store_kwargs(settings))
    if active is None:
        _activate(settings, collection)
    return Opened(model, store, collection, activate_when_done=active not in (None, collection))  # type: ignore[arg-type]


def finish_index(settings: Settings, opened: Opened, summary: dict[str, Any]) -> None:
    """Record the run; a new model's collection becomes the one queries use once a run completes."""
    if opened.activate_when_done:
        _activate(settings, opened.collection)
    save_state(settings, {"last_run": {**summary, "finished": time.time(), "collection": opened.collection}})


def _activate(settings: Settings, collection: str) -> None:
    from mediasearch.store.collections import set_active_collection

    set_active_collection(collection=collection, **store_kwargs(settings))


def open_for_query(settings: Settings, *, need_model: bool = True, text_only: bool = False) -> Opened:
    """The collection queries use and the model that built it (``text_only``: for text queries only)."""
    from mediasearch.store.collections import open_store

    collection = _query_collection(settings)
    store = open_store(collection=collection, dim=None, create=False, **store_kwargs(settings))
    _upgraded(store)
    if not need_model:
        return Opened(None, store, collection, False)  # type: ignore[arg-type]
    built = (store.get_meta() or {}).get("model") or {}
    try:
        spec = ModelSpec(built.get("name", DEFAULT_MODEL), built.get("pretrained"))
        model = models.load_for_text(settings, spec) if text_only else models.load(settings, spec)
        if model.spec.key() != built.get("key", model.spec.key()):
            raise ModelMismatchError(
                f"the weights of {model.spec.describe()} changed since the index was built: "
                "re-index with `mediasearch index`"
            )
    except BaseException:
        store.close()
        raise
    return Opened(model, store, collection, False)  # type: ignore[arg-type]  # a TextModel for text_only


def _upgraded(store: Store) -> Store:
    """The store, its schema upgraded to this release's (``index.schema``); closed if that fails."""
    from mediasearch.index.schema import ensure_schema

    try:
        ensure_schema(store)
    except BaseException:
        store.close()
        raise
    return store


def _query_collection(settings: Settings) -> str:
    """The active collection, or the one built with the model asked for by --model."""
    from mediasearch.clip.loading import resolve_spec
    from mediasearch.store.base import collection_name
    from mediasearch.store.collections import active_collection, list_collections, open_store

    active = active_collection(**store_kwargs(settings))
    if active is None:
        raise StoreError(f"nothing is indexed in {settings.home} yet: run `mediasearch index PATH` first")
    if settings.model is None:
        return active
    spec = resolve_spec(models.spec_from_settings(settings))
    wanted = collection_name(spec.key())
    if wanted == active or wanted in list_collections(**store_kwargs(settings)):
        return wanted
    with open_store(collection=active, dim=None, create=False, **store_kwargs(settings)) as store:
        built = (store.get_meta() or {}).get("model") or {}
    raise ModelMismatchError(
        f"the index in {settings.home} was built with {built.get('name', '?')}"
        f" ({built.get('pretrained') or 'bundled weights'}), not {spec.describe()}: "
        "drop --model to use it, or index with that model first"
    )


def state_path(settings: Settings) -> Path:
    return settings.home / STATE_FILE


def load_state(settings: Settings) -> dict[str, Any]:
    try:
        data = json.loads(state_path(settings).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_state(settings: Settings, update: dict[str, Any]) -> None:
    """Merge ``update`` into the home's state file, atomically."""
    state = {**load_state(settings), **update}
    path = state_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(state, indent=1))


def failures_path(settings: Settings) -> Path:
    """The files that failed to decode, remembered (``index.failures``)."""
    return settings.home / FAILURES_FILE


def mounts_path(settings: Settings) -> Path:
    """The mount points seen under the indexed folders, remembered (``index.mounts``)."""
    return settings.home / MOUNTS_FILE


def failures_listing(settings: Settings, last_errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``status``'s failures: the last run's errors, then every file still remembered as failing."""
    from mediasearch.index.failures import FailureLog

    shown = {e.get("path") for e in last_errors}
    remembered = FailureLog(failures_path(settings)).listing()
    return [*last_errors, *(f for f in remembered if f["path"] not in shown)]


def empty_status(settings: Settings) -> dict[str, Any]:
    """``status`` of a home where nothing is indexed yet (the last run may still have failures)."""
    last = load_state(settings).get("last_run") or {}
    return {
        "home": str(settings.home),
        "last_run": {k: v for k, v in last.items() if k != "errors"} or None,
        "failures": failures_listing(settings, last.get("errors", [])),
        "skipped": int(last.get("skipped", 0) or 0),
        "skipped_extensions": dict(last.get("skipped_extensions") or {}),
    }


@dataclass(frozen=True)
class Counts:
    """What ``status`` counts: files, images, videos and video frames in a collection."""

    files: int = 0
    images: int = 0
    videos: int = 0
    frames: int = 0

    @classmethod
    def of(cls, files: Iterable[Any]) -> Counts:
        """The counts of stored files (anything with ``kind`` and point ``ids``, as ``snapshot`` gives)."""
        total = images = videos = frames = 0
        for sf in files:
            total += 1
            images += sf.kind == "image"
            if sf.kind == "video":
                videos += 1
                frames += len(sf.ids)
        return cls(total, images, videos, frames)

    def __add__(self, other: Counts) -> Counts:
        return Counts(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))

    def __sub__(self, other: Counts) -> Counts:
        return Counts(*(a - b for a, b in zip(astuple(self), astuple(other), strict=True)))


def count_store(store: Store, enrichers: Sequence[Any] = ()) -> Counts:
    """Count a collection by reading every point's path and kind (a full scroll: seconds at 100k+)."""
    return scan_store(store, enrichers)[0]


def scan_store(store: Store, enrichers: Sequence[Any] = ()) -> tuple[Counts, dict[str, dict[str, int]]]:
    """The counts of a collection and, per enricher, the points it has done and those pending; one scroll."""
    from mediasearch.index.enrich import is_done
    from mediasearch.index.versions import ENRICHERS_KEY, record_of

    kinds: dict[str, str] = {}
    frames = 0
    progress = {e.name: {"done": 0, "pending": 0} for e in enrichers}
    for rec in store.scroll(fields=("path", "kind", ENRICHERS_KEY) if enrichers else ("path", "kind")):
        kinds[rec.payload["path"]] = rec.payload.get("kind", "image")
        frames += rec.payload.get("kind") == "video"
        record = record_of(rec.payload)
        for e in enrichers:
            progress[e.name]["done" if is_done(record, e) else "pending"] += 1
    images = sum(k == "image" for k in kinds.values())
    return Counts(len(kinds), images, sum(k == "video" for k in kinds.values()), frames), progress


def store_status(settings: Settings, opened: Opened, counts: Counts | None = None) -> dict[str, Any]:
    """``status`` of a store this process holds open; ``counts`` kept current by the caller (the
    daemon) spare the scroll that counts it."""
    from mediasearch.index import enrichers

    last = load_state(settings).get("last_run") or {}
    progress: dict[str, dict[str, int]] = {}
    if counts is None:
        counts, progress = scan_store(opened.store, enrichers.enabled(settings))
    meta = opened.store.get_meta() or {}
    return {
        "home": str(settings.home),
        **asdict(counts),
        "model": meta.get("model"),
        "store": opened.store.location,
        "collection": opened.collection,
        "last_run": {k: v for k, v in last.items() if k != "errors"} or None,
        "failures": failures_listing(settings, last.get("errors", [])),
        "tagging": bool(meta.get("tagging")),
        "skipped": int(last.get("skipped", 0) or 0),
        "skipped_extensions": dict(last.get("skipped_extensions") or {}),
        "enrichers": progress,
    }
