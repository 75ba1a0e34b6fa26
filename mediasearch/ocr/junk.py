"""Which recognised lines to keep: the recogniser reads *something* into any textured patch
(foliage, fabric, brickwork), so a line must be confident enough for its length to count as text."""

from __future__ import annotations

MIN_CONF = 0.5  # every line (RapidOCR's own text_score)
SHORT_CONF = 0.85  # a line of at most SHORT_LEN letters and digits
SHORT_LEN = 3


def keep_line(text: str, conf: float) -> bool:
    """True when ``text`` read at confidence ``conf`` is more likely writing than texture."""
    alnum = sum(ch.isalnum() for ch in text)
    if alnum == 0 or conf < MIN_CONF:
        return False
    if alnum <= SHORT_LEN and conf < SHORT_CONF:
        return False
    # Mostly punctuation and symbols ("||-=_"): texture read as strokes.
    return alnum * 2 >= len(text.replace(" ", ""))
