"""The model side of a home: which model the settings ask for, loading it (whole, or its text tower for
text queries), the tagger for new items, and encoding or classifying files with it.

Heavy imports (torch, open_clip) stay inside the functions.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mediasearch.clip.spec import ModelSpec
from mediasearch.settings import DEFAULT_MODEL, Settings

if TYPE_CHECKING:
    from mediasearch.clip.model import ClipModel
    from mediasearch.clip.spec import Embedder
    from mediasearch.store.base import Store


def spec_from_settings(settings: Settings) -> ModelSpec:
    """The model the settings ask for (the default when none is set)."""
    return ModelSpec(settings.model or DEFAULT_MODEL, settings.pretrained)


def load(settings: Settings, spec: ModelSpec, *, precision: str = "auto") -> ClipModel:
    from mediasearch.clip.loading import load_model

    return load_model(
        spec,
        device=settings.device,
        cache_dir=settings.cache_dir / "models",
        batch_size=settings.batch_size,
        precision=precision,
        image_runtime=settings.image_runtime,
    )


def load_for_text(settings: Settings, spec: ModelSpec) -> Embedder:
    """A model for text queries: the cached text tower when there is one (no open_clip, no image tower)."""
    from mediasearch.clip.loading import resolve_spec
    from mediasearch.clip.text_tower import load_text_model

    cached = load_text_model(resolve_spec(spec), settings.cache_dir / "models")
    return cached if cached is not None else load(settings, spec)


def index_tagger(settings: Settings, store: Store, model: ClipModel) -> Any:
    """A tagger for new items of ``store`` when tagging is on (``--tag``, or since ``mediasearch tag`` ran)."""
    from mediasearch.search.tagging import Tagger
    from mediasearch.search.vocabulary import Vocabulary, default_vocabulary

    saved = (store.get_meta() or {}).get("tagging")
    if not saved and not settings.tagging:
        return None
    vocab = Vocabulary.from_json(saved) if saved else default_vocabulary(model)
    return Tagger(model, vocab)


def encode_each(model: ClipModel, paths: list[str]) -> tuple[list[tuple[str, Any]], list[dict[str, str]]]:
    """Each readable file's embedding, under its shown absolute path; unreadable ones come back as errors."""
    from mediasearch.errors import MediaSearchError
    from mediasearch.media.discover import display_path
    from mediasearch.search.query import file_vector

    done, errors = [], []
    for path in paths:  # paths in the answers are shown (control characters escaped), as in the index
        try:
            done.append((display_path(os.path.abspath(path)), file_vector(model, path)))
        except MediaSearchError as exc:
            errors.append({"path": display_path(path), "error": str(exc)})
    return done, errors


def classify_embeddings_of(
    model: ClipModel, vectors: Sequence[Any], labels: Sequence[str], prompts_file: str | None
) -> list[Any]:
    """Ranked label probabilities per embedding: learned prompts' classes, else the template ensemble over
    ``labels``, else (no labels) the checkpoint's linear head."""
    import numpy as np

    from mediasearch.clip.zeroshot import classify_embeddings, ensemble_embeddings, logit_scale, ranked, templates_for

    embs = np.stack(list(vectors))
    if prompts_file is not None:
        from mediasearch.clip.prompts import load_prompts

        prompts = load_prompts(prompts_file)
        chosen = list(labels) or list(prompts.labels)
        return classify_embeddings(embs, prompts.label_embeddings(model, chosen), chosen, logit_scale(model))
    if not labels and model.head is not None:
        return ranked(model.head.probabilities(embs), model.head.labels)
    label_embs = ensemble_embeddings(model, list(labels), templates_for(model))
    return classify_embeddings(embs, label_embs, list(labels), logit_scale(model))
