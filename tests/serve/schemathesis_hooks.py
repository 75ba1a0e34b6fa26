"""Schemathesis hooks for the daemon's API: pictures for the ``mediasearch-image`` string format.

An image term's ``data`` is a picture in base64, which a JSON schema cannot describe; this teaches
schemathesis to generate real ones (small PNGs and JPEGs of the shapes domain). Load it with
``SCHEMATHESIS_HOOKS=schemathesis_hooks`` (and ``tests/serve`` on ``PYTHONPATH``), as test_contract.py does.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import schemathesis
from hypothesis import strategies as st

from mediasearch.lab.shapes import COLOURS, SHAPES, render

IMAGE_FORMAT = "mediasearch-image"


def _picture(colour: str, shape: str, seed: int, jpeg: bool, data_url: bool) -> str:
    image = render(colour, shape, rng=np.random.default_rng(seed), size=(48, 48))
    out = io.BytesIO()
    image.save(out, "JPEG" if jpeg else "PNG")
    encoded = base64.b64encode(out.getvalue()).decode("ascii")
    return f"data:image/{'jpeg' if jpeg else 'png'};base64,{encoded}" if data_url else encoded


pictures = st.builds(
    _picture,
    st.sampled_from(sorted(COLOURS)),
    st.sampled_from(list(SHAPES)),
    st.integers(0, 2**16),
    st.booleans(),
    st.booleans(),
)
schemathesis.openapi.format(IMAGE_FORMAT, pictures)
