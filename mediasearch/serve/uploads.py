"""Pictures a request sends to search by (their bytes), and the terms of a request with them."""

import base64
import binascii
import contextlib
import io
import os
import tempfile
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from mediasearch.errors import QueryError
from mediasearch.serve.security import MAX_UPLOAD_BYTES

if TYPE_CHECKING:
    from mediasearch.library.requests import Term

_UPLOAD_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tif"}


def save_upload(data: str, folder: str, n: int) -> str:
    """An image term's base64 bytes (or data: URL) as a file in ``folder``, for the encoder to read."""
    from PIL import Image, UnidentifiedImageError

    encoded = data.split(",", 1)[1] if data.startswith("data:") else data
    if len(encoded) > MAX_UPLOAD_BYTES * 4 // 3 + 4:
        raise QueryError(f"the image is too large to search by (at most {MAX_UPLOAD_BYTES >> 20} MB)")
    try:
        raw = base64.b64decode(encoded, validate=True)
        with Image.open(io.BytesIO(raw)) as im:
            kind = im.format or ""
    except (binascii.Error, ValueError, UnidentifiedImageError, OSError):
        raise QueryError("the image to search by is not a picture mediasearch can read") from None
    if kind not in _UPLOAD_FORMATS:
        raise QueryError(f"cannot search by a {kind} image: use JPEG, PNG, WebP, GIF, BMP or TIFF")
    path = os.path.join(folder, f"upload-{n}.{_UPLOAD_FORMATS[kind]}")
    with open(path, "wb") as out:
        out.write(raw)
    return path


@contextlib.contextmanager
def request_terms(terms: list[Any], indexed: Callable[[str], str]) -> Iterator[tuple["Term", ...]]:
    """A request's ``terms`` as search terms; images sent as bytes live in a temporary folder meanwhile,
    images named by path must be indexed (``indexed`` gives the stored path, or refuses)."""
    if not any(t.data for t in terms):
        yield _terms(terms, indexed, None)
        return
    with tempfile.TemporaryDirectory(prefix="mediasearch-upload-") as folder:
        yield _terms(terms, indexed, folder)


def _terms(terms: list[Any], indexed: Callable[[str], str], uploads: str | None) -> tuple["Term", ...]:
    from mediasearch.library.requests import Term

    made = []
    for n, t in enumerate(terms):
        if t.data and uploads:
            value = save_upload(t.data, uploads, n)
        else:
            value = indexed(t.value) if t.kind == "image" else t.value
        made.append(Term(t.kind, value, t.weight))
    return tuple(made)
