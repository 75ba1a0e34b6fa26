"""Text as words for matching: lowercase, accents folded, split on anything that is not a letter or digit.

The one normaliser of recognised text: the OCR enricher stores ``ocr_text`` through it and
``query --ocr`` builds its words with it, so "Café" on a sign matches ``--ocr cafe``.
"""

from __future__ import annotations

import re
import unicodedata

_WORD = re.compile(r"\w+")


def fold(text: str) -> str:
    """``text`` lowercased (casefold) with its accents and other combining marks removed."""
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return unicodedata.normalize("NFC", bare.casefold())


def words(text: str) -> tuple[str, ...]:
    """The words of ``text``, folded: ``"Café-Bar 24"`` → ``("cafe", "bar", "24")``; underscores split too."""
    return tuple(w for part in _WORD.findall(fold(text)) for w in part.split("_") if w)


def normalise(text: str) -> str:
    """``text`` as its folded words joined by single spaces (what ``ocr_text`` holds)."""
    return " ".join(words(text))
