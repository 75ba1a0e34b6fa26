"""The collection's HNSW graph, built in a child process (the engine holds the GIL while it optimises),
and the store opened again once the child lets go of it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mediasearch.library.home import store_kwargs
from mediasearch.settings import Settings

if TYPE_CHECKING:
    from mediasearch.store.base import Store


def reopen_store(settings: Settings, collection: str, wait_s: float = 60.0) -> Store:
    """The collection again, waiting up to ``wait_s`` for a child process to let go of it."""
    from mediasearch.store.collections import open_store

    return open_store(collection=collection, dim=None, create=False, wait_s=wait_s, **store_kwargs(settings))


def optimize_in_child(settings: Settings, collection: str, cancel: Any) -> int | None:
    """Build HNSW in a child process (the engine holds the GIL while it optimises); its exit code."""
    import subprocess
    import sys

    code = (
        "import sys; from pathlib import Path; from mediasearch.store import open_store\n"
        "with open_store(home=Path(sys.argv[1]), collection=sys.argv[2], dim=None, create=False) as s:\n"
        "    s.optimize()\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code, str(settings.home), collection])
    while child.poll() is None:
        if cancel.wait(0.5):
            child.terminate()  # the engine clears what a killed optimise leaves behind at the next open
    return child.wait()
