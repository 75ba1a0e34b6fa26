"""A home's library roots: the folders its daemon may index and name in requests.

The daemon serves the folders it watches (``serve FOLDER...``, remembered in the home's state) and
the folders its owner indexed on the machine (`Library.index` records them in ``HOME/roots.json``,
0600). A request from elsewhere, even with the admin token, cannot add one: only someone who can write
the home can. Paths are compared lexically, after making them absolute and normal.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from mediasearch.errors import QueryError
from mediasearch.fsutil import atomic_write, make_private, under

ROOTS_FILE = "roots.json"
WATCHED_KEY = "daemon_roots"  # the daemon's watched folders, in the home's state.json


class OutsideRootsError(QueryError):
    """A request names a path outside the library roots."""


def recorded(home: Path) -> list[str]:
    """The roots recorded in the home (indexed on the machine) and its watched folders."""
    out: list[str] = []
    for name, key in ((ROOTS_FILE, None), ("state.json", WATCHED_KEY)):
        try:
            data = json.loads((Path(home) / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        values = data.get(key) if key and isinstance(data, dict) else data
        out += [v for v in values or [] if isinstance(v, str) and os.path.isabs(v)]
    return sorted(set(out))


def record(home: Path, paths: Iterable[str]) -> None:
    """Add ``paths`` (absolute) to the home's roots, if not already under one."""
    known = recorded(home)
    new = [os.path.normpath(p) for p in paths if not any(is_under(p, r) for r in known)]
    if new:
        make_private(home)
        mine = _own(home)
        atomic_write(Path(home) / ROOTS_FILE, json.dumps(sorted({*mine, *new}), indent=1), mode=0o600)


def _own(home: Path) -> list[str]:
    try:
        data = json.loads((Path(home) / ROOTS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [v for v in data if isinstance(v, str)] if isinstance(data, list) else []


def is_under(path: str, root: str) -> bool:
    """Whether ``path`` is ``root`` or inside it (lexically: ``..`` is resolved first)."""
    return under(os.path.normpath(path), os.path.normpath(root))


def checked(path: str, roots: Sequence[str]) -> str:
    """``path``, normalised, if it is absolute and under one of ``roots``; else one line saying how to
    add a root on the daemon's machine."""
    if not path or "\x00" in path or not os.path.isabs(path):
        # Refused like a path outside the roots (never resolved against the daemon's working folder).
        raise OutsideRootsError(f"give an absolute path under the library roots, not {path!r}")
    path = os.path.normpath(path)
    if not any(is_under(path, r) for r in roots):
        raise OutsideRootsError(
            f"{path} is outside the library roots ({', '.join(roots) or 'none yet'}): on the daemon's machine, "
            f"add it with `mediasearch index {path}` or `mediasearch serve {path}`"
        )
    return path
