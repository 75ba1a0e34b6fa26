"""Recognised text as the index holds it and as queries match it: one normaliser for both sides.

``normalise`` lowercases and folds accents ("Café" -> "cafe"); ``words`` splits into the words that
Qdrant's word tokenizer makes. ``index_text`` is what goes into the payload's ``ocr_text``: the
normalised lines, then extra words so that a whole-word match also finds
- a long word from its beginning: "starbuck" finds "STARBUCKS" (``PREFIX_MIN`` letters or more);
- a word the recogniser read with a digit for a letter: "oyster" finds "0YSTER".
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence

PREFIX_MIN = 6  # a query word this long matches the words it begins
PREFIX_MAX_WORD = 24  # longer "words" are lines whose spaces the recogniser dropped: no prefixes
_WORD = re.compile(r"\w+", re.UNICODE)
_DIGIT_FOR_LETTER = str.maketrans({"0": "o", "1": "l", "5": "s", "8": "b"})


def normalise(text: str) -> str:
    """Lowercase, compatibility forms folded (NFKC), accents removed, whitespace collapsed."""
    text = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text).casefold())
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return " ".join(unicodedata.normalize("NFC", text).split())


def words(text: str) -> list[str]:
    """The normalised words of ``text`` (letters and digits; punctuation splits)."""
    return _WORD.findall(normalise(text).replace("_", " "))


def query_words(text: str) -> tuple[str, ...]:
    """The words a ``--ocr`` query asks for, each once, in order."""
    return tuple(dict.fromkeys(words(text)))


def index_text(lines: Iterable[str]) -> str:
    """The payload ``ocr_text`` of recognised ``lines``: the text, then the extra words to match."""
    text = "\n".join(normalise(line) for line in lines if line.strip())
    extra = dict.fromkeys(word for token in words(text) for word in _variants(token))
    present = set(words(text))
    tail = " ".join(word for word in extra if word not in present)
    return f"{text}\n{tail}" if tail else text


def _variants(token: str) -> list[str]:
    out = []
    if any(ch.isdigit() for ch in token) and sum(ch.isalpha() for ch in token) >= 2:
        out.append(token.translate(_DIGIT_FOR_LETTER))
    for word in [token, *out]:
        if PREFIX_MIN < len(word) <= PREFIX_MAX_WORD and word.isalpha():
            out.extend(word[:end] for end in range(PREFIX_MIN, len(word)))
    return out


def snippet(lines: Sequence[str], wanted: Sequence[str], width: int = 80) -> str | None:
    """The recognised line(s) holding the most of ``wanted`` (normalised words), shortened to about
    ``width`` characters around the first of them; None when no line holds any."""
    if not wanted:
        return None
    best, best_count = None, 0
    for line in lines:
        tokens = words(line)
        count = sum(any(tok.startswith(w) or _digit_folded(tok).startswith(w) for tok in tokens) for w in wanted)
        if count > best_count:
            best, best_count = line, count
    if best is None:
        return None
    return _shorten(best.strip(), wanted, width)


def _digit_folded(token: str) -> str:
    return token.translate(_DIGIT_FOR_LETTER) if any(ch.isalpha() for ch in token) else token


def _shorten(line: str, wanted: Sequence[str], width: int) -> str:
    if len(line) <= width:
        return line
    lowered = normalise(line)
    at = min((i for i in (lowered.find(w) for w in wanted) if i >= 0), default=0)
    start = max(0, at - width // 3)
    piece = line[start : start + width]
    return ("…" if start else "") + piece + ("…" if start + width < len(line) else "")
