"""The registry of enrichers: one module per signal in this package, each with ``make(settings)``.

``make`` returns the enricher, or None when what it needs is not installed (then the signal is simply
absent). A setting named after the enricher (``ocr = false`` in config.toml, ``MEDIASEARCH_FACES=0``,
``index --no-ocr``) turns it off, which also deletes its data at the next pass (``enrich.sync_enabled``).
To add a signal: a module here with ``make`` and its name in ``NAMES``, and its payload fields declared
in ``store/base.py`` (docs/architecture.md, "Signals and enrichers").
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from mediasearch.settings import Settings

if TYPE_CHECKING:
    from mediasearch.index.enrich import Enricher

NAMES = ("metadata", "places", "ocr", "faces")  # in the order they run on a file (places reads metadata's geo)


def installed(settings: Settings) -> list[Enricher]:
    """Every enricher whose module is present and whose engine is installed, on or off."""
    out = []
    for name in NAMES:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            continue  # that signal's module is not part of this installation
        enricher = module.make(settings)
        if enricher is not None:
            out.append(enricher)
    return out


def is_on(settings: Settings, name: str) -> bool:
    """Whether the settings leave the enricher ``name`` on (a signal without a setting always is)."""
    return bool(getattr(settings, name, True))


def enabled(settings: Settings) -> list[Enricher]:
    """The enrichers that run: installed and not turned off."""
    return [e for e in installed(settings) if is_on(settings, e.name)]
