"""The search page's files (package data in ``mediasearch/web``), with the headers they go out with."""

import functools
import hashlib
from typing import Any

WEB_ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}
NOSNIFF = {"X-Content-Type-Options": "nosniff"}
# The page loads nothing from elsewhere; the token travels in its URL once, so no referrer either.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; media-src 'self'; object-src 'none'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    **NOSNIFF,
}


@functools.cache
def web_asset(name: str) -> tuple[bytes, str]:
    """A file of the search page (package data in ``mediasearch/web``) and its ETag."""
    from importlib.resources import files

    data = (files("mediasearch") / "web" / name).read_bytes()
    return data, '"' + hashlib.sha256(data).hexdigest()[:24] + '"'


def asset_response(name: str, if_none_match: str | None) -> Any:
    from fastapi.responses import Response

    data, tag = web_asset(name)
    headers = {"ETag": tag, "Cache-Control": "no-cache", **PAGE_HEADERS}
    if unchanged(tag, if_none_match):
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=WEB_ASSETS[name], headers=headers)


def unchanged(tag: str, if_none_match: str | None) -> bool:
    """Whether the client's ``If-None-Match`` names ``tag`` (then a 304 answers)."""
    return bool(if_none_match) and tag in [v.strip().removeprefix("W/") for v in (if_none_match or "").split(",")]
