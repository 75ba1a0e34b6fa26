"""Tag vocabularies: the built-in and shapes lists, a user's file (one tag a line, ``tag = 0.7`` for its
own threshold), learned prompts' classes, and the default that suits a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mediasearch.clip.spec import Embedder
from mediasearch.errors import QueryError
from mediasearch.search.relevance import ClosedVocabulary

BUILTIN_VOCAB = Path(__file__).parent.parent / "data" / "vocabulary.txt"
SHAPES_VOCAB = Path(__file__).parent.parent / "data" / "shapes_vocabulary.txt"
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
    from mediasearch.clip.prompts import load_prompts

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


def default_vocabulary(model: Embedder) -> Vocabulary:
    """The vocabulary that suits the model: the shapes domain for the demo model, else the built-in one."""
    path = SHAPES_VOCAB if model.spec.is_demo else BUILTIN_VOCAB
    if path not in _DEFAULTS:
        _DEFAULTS[path] = load_vocabulary(path)
    return _DEFAULTS[path]


_DEFAULTS: dict[Path, Vocabulary] = {}

# The words of the demo model's training captions besides colours, shapes and 'photo'-like filler
# (scripts/train_demo_model.py: "a red circle on a grey background", "a square coloured red", ...).
DEMO_CAPTION_WORDS = frozenset("grey plain background drawing that is coloured colour shape object".split())


def closed_vocabulary(model: Embedder) -> ClosedVocabulary | None:
    """Everything the model has learned, when that is known: the demo model's shapes domain; None for
    real CLIPs, whose knowledge the built-in vocabulary only samples."""
    if not model.spec.is_demo:
        return None
    return ClosedVocabulary(default_vocabulary(model).labels, DEMO_CAPTION_WORDS)
