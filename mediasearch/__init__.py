"""mediasearch: find photos and moments in videos by what they show."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
