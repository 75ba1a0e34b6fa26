"""Zero-shot tags: a vocabulary, prompt-ensembled label embeddings and per-tag thresholds.

A tag applies to an item when the tag's calibrated probability (the tag against the best neutral
caption, see ``relevance``) reaches its threshold, 0.5 unless the vocabulary says otherwise.

Learned prompts (``finetune --prompt-learning``) make a closed vocabulary of the classes they were
trained for: an item gets the class whose softmax probability among them reaches 0.5, if one does.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mediasearch.errors import QueryError
from mediasearch.model import Embedder
from mediasearch.relevance import Calibrator
from mediasearch.store import Store
from mediasearch.zeroshot import ensemble_embeddings, softmax, templates_for

BUILTIN_VOCAB = Path(__file__).parent / "data" / "vocabulary.txt"
SHAPES_VOCAB = Path(__file__).parent / "data" / "shapes_vocabulary.txt"
DEFAULT_THRESHOLD = 0.5
MAX_TAGS = 10


@dataclass(frozen=True)
class Vocabulary:
    labels: tuple[str, ...]
    thresholds: tuple[float, ...]
    prompts: str | None = None  # a learned-prompts file: the labels are its classes

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"labels": list(self.labels), "thresholds": list(self.thresholds)}
        return out | ({"prompts": self.prompts} if self.prompts else {})

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Vocabulary:
        return cls(tuple(data["labels"]), tuple(float(t) for t in data["thresholds"]), data.get("prompts"))


def parse_vocabulary(text: str, source: str = "vocabulary") -> Vocabulary:
    """One tag a line; '#' comments; 'tag = 0.7' (or 'tag<TAB>0.7') sets a tag's threshold."""
    labels: dict[str, float] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        label, threshold = line, DEFAULT_THRESHOLD
        for sep in ("=", "\t"):
            if sep in line:
                label, _, value = line.partition(sep)
                try:
                    threshold = float(value)
                except ValueError:
                    msg = f"{source}:{n}: threshold must be a number, got {value.strip()!r}"
                    raise QueryError(msg) from None
                break
        labels[label.strip()] = threshold
    if not labels:
        raise QueryError(f"{source}: no tags in the vocabulary")
    return Vocabulary(tuple(labels), tuple(labels.values()))


def load_vocabulary(path: str | Path | None = None) -> Vocabulary:
    """The built-in vocabulary, or a user's file."""
    target = Path(path) if path else BUILTIN_VOCAB
    try:
        text = target.read_text(encoding="utf-8")
    except OSError as exc:
        raise QueryError(f"cannot read vocabulary {target}: {exc.strerror or exc}") from None
    return parse_vocabulary(text, str(target))


def prompts_vocabulary(path: str | Path) -> Vocabulary:
    """The classes of a learned-prompts file as a vocabulary (remembered by the file's absolute path)."""
    from mediasearch.prompt_learning import load_prompts

    learned = load_prompts(path)
    labels = tuple(learned.labels)
    return Vocabulary(labels, (DEFAULT_THRESHOLD,) * len(labels), str(Path(path).resolve()))


def choose_vocabulary(model: Embedder, vocab_path: str | None, prompts_path: str | None) -> Vocabulary:
    """What `mediasearch tag` tags with: a vocabulary file, learned prompts, or the model's default."""
    if vocab_path and prompts_path:
        raise QueryError("give a vocabulary or learned prompts, not both")
    if prompts_path:
        return prompts_vocabulary(prompts_path)
    return load_vocabulary(vocab_path) if vocab_path else default_vocabulary(model)


_DEFAULTS: dict[Path, Vocabulary] = {}


def default_vocabulary(model: Embedder) -> Vocabulary:
    """The vocabulary that suits the model: the shapes domain for the demo model, else the built-in one."""
    path = SHAPES_VOCAB if model.spec.is_demo else BUILTIN_VOCAB
    if path not in _DEFAULTS:
        _DEFAULTS[path] = load_vocabulary(path)
    return _DEFAULTS[path]


class Tagger:
    """Turns image embeddings into tag lists."""

    def __init__(self, model: Embedder, vocab: Vocabulary):
        self.vocab = vocab
        self.thresholds = np.asarray(vocab.thresholds, np.float32)
        self.calibrator: Calibrator | None = None
        if vocab.prompts:
            from mediasearch.prompt_learning import load_prompts
            from mediasearch.zeroshot import logit_scale

            self.labels = load_prompts(vocab.prompts).label_embeddings(model, vocab.labels)  # type: ignore[arg-type]
            self.scale = logit_scale(model)
        else:
            self.labels = ensemble_embeddings(model, vocab.labels, templates_for(model))
            self.calibrator = Calibrator.neutral(model)

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        """N×T probabilities of each tag for each item: calibrated, or a softmax over learned classes."""
        sims = vectors @ self.labels.T
        if self.calibrator is not None:
            return self.calibrator(sims, vectors)
        return softmax(self.scale * sims)

    def __call__(self, vectors: np.ndarray) -> list[list[str]]:
        probs = self.probabilities(vectors)
        out = []
        for row in probs:
            order = [i for i in np.argsort(-row, kind="stable") if row[i] >= self.thresholds[i]]
            out.append([self.vocab.labels[i] for i in order[:MAX_TAGS]])
        return out


def tag_store(store: Store, tagger: Tagger, batch: int = 512) -> dict[str, Any]:
    """Tag every point in the store; returns the number of files and of tags applied per tag."""
    files: dict[str, set[str]] = {}
    chunk: list[Any] = []

    def flush() -> None:
        tags = tagger(np.stack([r.vector for r in chunk]))
        groups: dict[tuple[str, ...], list[str]] = {}
        for rec, labels in zip(chunk, tags, strict=True):
            groups.setdefault(tuple(labels), []).append(rec.id)
            files.setdefault(rec.payload["path"], set()).update(labels)
        for labels_key, ids in groups.items():
            store.set_payload(ids, {"tags": list(labels_key)})
        chunk.clear()

    for rec in store.scroll(fields=("path",), with_vectors=True, batch=batch):
        chunk.append(rec)
        if len(chunk) >= batch:
            flush()
    if chunk:
        flush()
    store.flush()
    counts = Counter(t for tags in files.values() for t in tags)
    tagged = sum(1 for t in files.values() if t)
    return {"files": len(files), "tagged": tagged, "tags": dict(counts.most_common())}


def tag_counts(store: Store) -> dict[str, int]:
    """How many files carry each tag (a video counts once)."""
    files: dict[str, set[str]] = {}
    for rec in store.scroll(fields=("path", "tags")):
        files.setdefault(rec.payload["path"], set()).update(rec.payload.get("tags") or [])
    return dict(Counter(t for tags in files.values() for t in tags).most_common())
