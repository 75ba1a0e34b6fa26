"""One home's index: which model and store to open for indexing or for queries.

The CLI (and later the daemon) call these; they never print or exit.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mediasearch.errors import ModelMismatchError, StoreError
from mediasearch.model import ModelSpec
from mediasearch.settings import DEFAULT_MODEL, Settings

if TYPE_CHECKING:
    from mediasearch.model import ClipModel, Embedder
    from mediasearch.store import Store

STATE_FILE = "state.json"


def spec_from_settings(settings: Settings) -> ModelSpec:
    """The model the settings ask for (the default when none is set)."""
    return ModelSpec(settings.model or DEFAULT_MODEL, settings.pretrained)


def _store_kwargs(settings: Settings) -> dict[str, Any]:
    return {"home": settings.home, "qdrant_url": settings.qdrant_url, "api_key": settings.qdrant_api_key}


def load(settings: Settings, spec: ModelSpec, *, precision: str = "auto") -> ClipModel:
    from mediasearch.model import load_model

    return load_model(
        spec,
        device=settings.device,
        cache_dir=settings.cache_dir / "models",
        batch_size=settings.batch_size,
        precision=precision,
    )


def load_for_text(settings: Settings, spec: ModelSpec) -> Embedder:
    """A model for text queries: the cached text tower when there is one (no open_clip, no image tower)."""
    from mediasearch.model import resolve_spec
    from mediasearch.text_tower import load_text_model

    cached = load_text_model(resolve_spec(spec), settings.cache_dir / "models")
    return cached if cached is not None else load(settings, spec)


@dataclass
class Opened:
    """A model and the store built with it."""

    model: ClipModel
    store: Store
    collection: str
    activate_when_done: bool

    def close(self) -> None:
        self.store.close()


def open_for_index(settings: Settings) -> Opened:
    """The settings' model and its collection (created, with the model recorded, if new)."""
    from mediasearch.store import active_collection, collection_name, open_store

    model = load(settings, spec_from_settings(settings))
    collection = collection_name(model.spec.key())
    store = open_store(collection=collection, dim=model.dim, create=True, **_store_kwargs(settings))
    if store.get_meta() is None:
        store.set_meta({"model": model.info(), "created": time.time()})
    active = active_collection(**_store_kwargs(settings))
    if active is None:
        _activate(settings, collection)
    return Opened(model, store, collection, activate_when_done=active not in (None, collection))


def finish_index(settings: Settings, opened: Opened, summary: dict[str, Any]) -> None:
    """Record the run; a new model's collection becomes the one queries use once a run completes."""
    if opened.activate_when_done:
        _activate(settings, opened.collection)
    save_state(settings, {"last_run": {**summary, "finished": time.time(), "collection": opened.collection}})


def _activate(settings: Settings, collection: str) -> None:
    from mediasearch.store import set_active_collection

    set_active_collection(collection=collection, **_store_kwargs(settings))


def open_for_query(settings: Settings, *, need_model: bool = True, text_only: bool = False) -> Opened:
    """The collection queries use and the model that built it (``text_only``: for text queries only)."""
    from mediasearch.store import open_store

    collection = _query_collection(settings)
    store = open_store(collection=collection, dim=None, create=False, **_store_kwargs(settings))
    if not need_model:
        return Opened(None, store, collection, False)  # type: ignore[arg-type]
    built = (store.get_meta() or {}).get("model") or {}
    try:
        spec = ModelSpec(built.get("name", DEFAULT_MODEL), built.get("pretrained"))
        model = load_for_text(settings, spec) if text_only else load(settings, spec)
        if model.spec.key() != built.get("key", model.spec.key()):
            raise ModelMismatchError(
                f"the weights of {model.spec.describe()} changed since the index was built: "
                "re-index with `mediasearch index`"
            )
    except BaseException:
        store.close()
        raise
    return Opened(model, store, collection, False)  # type: ignore[arg-type]  # a TextModel for text_only


def _query_collection(settings: Settings) -> str:
    """The active collection, or the one built with the model asked for by --model."""
    from mediasearch.model import resolve_spec
    from mediasearch.store import active_collection, collection_name, list_collections, open_store

    active = active_collection(**_store_kwargs(settings))
    if active is None:
        raise StoreError(f"nothing is indexed in {settings.home} yet: run `mediasearch index PATH` first")
    if settings.model is None:
        return active
    spec = resolve_spec(spec_from_settings(settings))
    wanted = collection_name(spec.key())
    if wanted == active or wanted in list_collections(**_store_kwargs(settings)):
        return wanted
    with open_store(collection=active, dim=None, create=False, **_store_kwargs(settings)) as store:
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
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def status(settings: Settings) -> dict[str, Any]:
    """What is indexed, by which model, where, the last run and its failures."""
    from mediasearch.store import active_collection

    if active_collection(**_store_kwargs(settings)) is None:
        last = load_state(settings).get("last_run") or {}
        return {
            "home": str(settings.home),
            "files": 0,
            "images": 0,
            "videos": 0,
            "frames": 0,
            "model": None,
            "store": None,
            "collection": None,
            "last_run": {k: v for k, v in last.items() if k != "errors"} or None,
            "failures": last.get("errors", []),
        }
    opened = open_for_query(settings, need_model=False)
    with opened.store:
        return store_status(settings, opened)


def store_status(settings: Settings, opened: Opened) -> dict[str, Any]:
    """``status`` computed on a store this process already holds open (the CLI's or the daemon's)."""
    last = load_state(settings).get("last_run") or {}
    kinds: dict[str, str] = {}
    frames = 0
    for rec in opened.store.scroll(fields=("path", "kind")):
        kinds[rec.payload["path"]] = rec.payload.get("kind", "image")
        frames += rec.payload.get("kind") == "video"
    meta = opened.store.get_meta() or {}
    return {
        "home": str(settings.home),
        "files": len(kinds),
        "images": sum(k == "image" for k in kinds.values()),
        "videos": sum(k == "video" for k in kinds.values()),
        "frames": frames,
        "model": meta.get("model"),
        "store": opened.store.location,
        "collection": opened.collection,
        "last_run": {k: v for k, v in last.items() if k != "errors"} or None,
        "failures": last.get("errors", []),
        "tagging": bool(meta.get("tagging")),
    }


def forget(settings: Settings, path: str) -> int:
    """Drop a folder from every collection of the home; returns the number of files dropped."""
    from mediasearch.indexer import forget as forget_folder
    from mediasearch.store import list_collections, open_store

    dropped = 0
    for collection in list_collections(**_store_kwargs(settings)):
        with open_store(collection=collection, dim=None, create=False, **_store_kwargs(settings)) as store:
            dropped = max(dropped, forget_folder(store, path))
    return dropped


def index_tagger(settings: Settings, opened: Opened) -> Any:
    """A tagger for new items when tagging is on (``--tag``, or since ``mediasearch tag`` ran)."""
    from mediasearch.tagging import Tagger, Vocabulary, default_vocabulary

    saved = (opened.store.get_meta() or {}).get("tagging")
    if not saved and not settings.tagging:
        return None
    vocab = Vocabulary.from_json(saved) if saved else default_vocabulary(opened.model)
    return Tagger(opened.model, vocab)


def tag_all(settings: Settings, vocab_path: str | None, prompts_path: str | None = None) -> dict[str, Any]:
    """Tag everything indexed and remember the vocabulary (or learned prompts) for items indexed later."""
    from mediasearch.tagging import Tagger, choose_vocabulary, tag_store

    opened = open_for_query(settings)
    vocab = choose_vocabulary(opened.model, vocab_path, prompts_path)
    with opened.store as store:
        result = tag_store(store, Tagger(opened.model, vocab))
        store.set_meta({**(store.get_meta() or {}), "tagging": vocab.to_json()})
    return result


def tag_counts(settings: Settings) -> dict[str, int]:
    from mediasearch.tagging import tag_counts as counts

    with open_for_query(settings, need_model=False).store as store:
        return counts(store)


def _encode_files(model: ClipModel, paths: list[str]) -> tuple[list[tuple[str, Any]], list[dict[str, str]]]:
    """Each readable file's embedding; unreadable ones come back as errors."""
    from mediasearch.discover import display_path
    from mediasearch.errors import MediaSearchError
    from mediasearch.search import file_vector

    done, errors = [], []
    for path in paths:  # paths in the answers are shown (control characters escaped), as in the index
        try:
            done.append((display_path(os.path.abspath(path)), file_vector(model, path)))
        except MediaSearchError as exc:
            errors.append({"path": display_path(path), "error": str(exc)})
    return done, errors


def embed(settings: Settings, paths: list[str], texts: list[str]) -> tuple[list[dict[str, Any]], list[Any]]:
    """Embeddings of files and texts with the settings' model (DESIGN.md ``embed --json``)."""
    model = load(settings, spec_from_settings(settings))
    done, errors = _encode_files(model, paths)
    rows: list[dict[str, Any]] = [{"path": p, "embedding": v.tolist()} for p, v in done]
    if texts:
        vectors = model.encode_texts(texts)
        rows += [{"text": t, "embedding": v.tolist()} for t, v in zip(texts, vectors, strict=True)]
    return rows, errors


def classify_files(
    settings: Settings, paths: list[str], labels_text: str | None
) -> tuple[list[dict[str, Any]], list[Any]]:
    """Zero-shot probabilities of each label for each file, with the template ensemble.

    Without labels, the model's linear head (a ``finetune --head linear`` checkpoint) classifies.
    """
    import numpy as np

    from mediasearch.errors import QueryError
    from mediasearch.zeroshot import (
        classify_embeddings,
        ensemble_embeddings,
        logit_scale,
        parse_labels,
        ranked,
        templates_for,
    )

    labels = parse_labels(labels_text or "")
    if labels_text is not None and len(labels) < 2:
        raise QueryError("--labels needs at least two labels, comma-separated")
    model = load(settings, spec_from_settings(settings))
    if labels_text is None and model.head is None:
        raise QueryError("--labels is required: this model has no linear head (`finetune --head linear` adds one)")
    done, errors = _encode_files(model, paths)
    if not done:
        return [], errors
    embs = np.stack([v for _, v in done])
    if labels_text is None and model.head is not None:
        scores = ranked(model.head.probabilities(embs), model.head.labels)
    else:
        label_embs = ensemble_embeddings(model, labels, templates_for(model))
        scores = classify_embeddings(embs, label_embs, labels, logit_scale(model))
    rows = [
        {"path": p, "labels": [{"label": s.label, "prob": round(s.prob, 4)} for s in row]}
        for (p, _), row in zip(done, scores, strict=True)
    ]
    return rows, errors
