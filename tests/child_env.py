"""The environment a test gives the mediasearch processes it starts."""

from __future__ import annotations

import os

SUITE_IMAGE_RUNTIME = "torch"
"""The suite runs the image tower on torch: measuring the fastest runtime costs each fresh home a few
seconds (tests/clip/test_image_runtime.py covers that path, "auto", on its own)."""


def settings_free_env() -> dict[str, str]:
    """This environment without MEDIASEARCH_* settings (but the suite's image runtime), offline."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIASEARCH_")}
    env["MEDIASEARCH_IMAGE_RUNTIME"] = SUITE_IMAGE_RUNTIME
    env["HF_HUB_OFFLINE"] = "1"
    return env
