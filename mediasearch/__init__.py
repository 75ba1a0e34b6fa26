"""mediasearch: find photos and moments in videos by what they show.

```python
import mediasearch as ms

with ms.Library.open(model="demo") as lib:
    lib.index(["~/Photos"])
    for hit in lib.query("a red circle", limit=5):
        print(hit.path, hit.score)
```

Names are imported on first use, so ``import mediasearch`` stays instant (no torch, no Qdrant).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_PUBLIC = {
    "Library": "mediasearch.library.api",
    "Hit": "mediasearch.library.types",
    "IndexReport": "mediasearch.library.types",
    "Status": "mediasearch.library.types",
    "TagReport": "mediasearch.library.types",
    "Classification": "mediasearch.library.types",
    "LabelProb": "mediasearch.library.types",
    "Embedding": "mediasearch.library.types",
    "FileError": "mediasearch.library.types",
    "Person": "mediasearch.library.people",
    "Settings": "mediasearch.settings",
    "MediaSearchError": "mediasearch.errors",
}

__all__ = [
    "Classification",
    "Embedding",
    "FileError",
    "Hit",
    "IndexReport",
    "LabelProb",
    "Library",
    "MediaSearchError",
    "Person",
    "Settings",
    "Status",
    "TagReport",
    "__version__",
]

if TYPE_CHECKING:
    from mediasearch.errors import MediaSearchError
    from mediasearch.library.api import Library
    from mediasearch.library.people import Person
    from mediasearch.library.types import (
        Classification,
        Embedding,
        FileError,
        Hit,
        IndexReport,
        LabelProb,
        Status,
        TagReport,
    )
    from mediasearch.settings import Settings


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'mediasearch' has no attribute {name!r}")
