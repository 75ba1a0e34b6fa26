"""The trust boundary's parts in-process (`serve/security.py`): roles and the route table, the Host check,
redaction, the flood filter, and the HTTP protocol's connection cap and header time limit under a
crowd of half-open sockets (a real uvicorn server on loopback, with small limits)."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mediasearch.errors import redact
from mediasearch.serve.security import (
    ADMIN,
    READ,
    FloodFilter,
    HostCheck,
    Tokens,
    guarded_protocol,
    make_tokens,
    required_role,
)

SECRET = st.text(st.characters(codec="ascii", categories=("L", "N")), min_size=6, max_size=30)


@given(user=SECRET, password=SECRET, host=st.sampled_from(["127.0.0.1:6333", "qdrant.internal", "[::1]:6334"]))
def test_urls_lose_their_user_info(user: str, password: str, host: str) -> None:
    for scheme in ("http", "https", "grpc"):
        text = f"error: Qdrant at {scheme}://{user}:{password}@{host}/collections: refused"
        shown = redact(text)
        assert password not in shown and f"{user}:" not in shown
        assert host in shown  # still says where


@given(key=SECRET, name=st.sampled_from(["api-key", "api_key", "API_KEY", "token", "password", "x-api-key"]))
def test_keys_and_tokens_lose_their_values(key: str, name: str) -> None:
    for text in (f"{name}: {key}", f"{name}={key}&x=1", f'{{"{name}": "{key}"}}', f"Authorization: Bearer {key}"):
        assert key not in redact(text), text


@given(st.text(st.characters(blacklist_characters="@=:"), max_size=80))
def test_text_without_credentials_is_left_alone(text: str) -> None:
    assert redact(text) == text


def test_roles_and_the_route_table() -> None:
    tokens = make_tokens(None, None, loopback=True)
    assert tokens.role(tokens.admin) == ADMIN and tokens.role(tokens.read) == READ
    assert tokens.role("guess-0123456789") is None and tokens.role("") is None and tokens.role(None) is None
    assert required_role("GET", "/health") is None and required_role("GET", "/static/app.js") is None
    assert required_role("POST", "/query") == READ and required_role("GET", "/media") == READ
    for route in ("/index", "/forget", "/tag", "/some/future/route"):
        assert required_role("POST", route) == ADMIN  # what changes things needs the admin token by default
    with pytest.raises(Exception, match="differ"):
        Tokens("same-token-0123456789", "same-token-0123456789")
    with pytest.raises(Exception, match="needs an admin token"):
        make_tokens(None, None, loopback=False)
    with pytest.raises(Exception, match="at least 16"):
        make_tokens("short", None, loopback=True)


@given(st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,20}){1,3}", fullmatch=True), st.integers(1, 65535))
@settings(max_examples=50)
def test_only_known_names_and_addresses_are_hosts(name: str, port: int) -> None:
    check = HostCheck.for_daemon(["photos.home.arpa"])
    if not name.endswith(".localhost") and name not in check.names:
        assert not check.allows(f"{name}:{port}") and not check.allows(name)
    for allowed in ("localhost", "127.0.0.1", "[::1]", "192.168.1.20", "photos.home.arpa", "app.localhost"):
        assert check.allows(f"{allowed}:{port}") and check.allows(allowed), allowed
    assert not check.allows("localhost:http") and not check.allows("")


def test_a_flood_of_one_error_is_cut_short_and_counted() -> None:
    flood = FloodFilter(burst=5, per=60.0)
    log = logging.getLogger("asyncio")
    records = [log.makeRecord("asyncio", logging.ERROR, __file__, 7, "accept failed: %s", ("EMFILE",), None)
               for _ in range(1000)]
    passed = [r for r in records if flood.filter(r)]
    assert len(passed) == 5
    other = log.makeRecord("asyncio", logging.ERROR, __file__, 8, "api-key=%s", ("sekret",), None)
    assert flood.filter(other) and "995 similar log lines dropped" in other.getMessage()
    assert "sekret" not in other.getMessage()
    # The daemon's own lines, one per file indexed, all pass (redacted all the same).
    own = [log.makeRecord("mediasearch.serve.daemon", logging.INFO, __file__, 9, "indexed %s", (f"/p/{n}.jpg",), None)
           for n in range(1000)]
    assert all(flood.filter(r) for r in own)
    url = ("http://u:pw@h",)
    mine = log.makeRecord("mediasearch.serve.daemon", logging.ERROR, __file__, 9, "Qdrant at %s", url, None)
    assert flood.filter(mine) and "pw" not in mine.getMessage()


# -- connections ----------------------------------------------------------------------------------------


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = json.dumps({"ok": True}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


@contextlib.contextmanager
def _server(max_connections: int, header_timeout: float, app: Any = _app) -> Iterator[int]:
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_config=None, lifespan="off", ws="none",
                            http=guarded_protocol(max_connections, header_timeout))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield int(sock.getsockname()[1])
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def _get(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        return b"".join(iter(lambda: client.recv(4096), b""))


def _closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(10)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False  # still open after 10 s
    except OSError:
        return True  # reset: closed too


def test_half_open_sockets_neither_lock_clients_out_nor_stay() -> None:
    """Many more idle connections than the cap, some with half a header: a client still gets its answer,
    and every idle socket is closed by the server (evicted, or at the header time limit)."""
    with _server(max_connections=8, header_timeout=1.0) as port:
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(40)]
        for sock in idle[::2]:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.")  # headers begun, never finished
        try:
            assert _get(port).startswith(b"HTTP/1.1 200")
            assert all(_closed_by_server(sock) for sock in idle)
            assert _get(port).startswith(b"HTTP/1.1 200")
        finally:
            for sock in idle:
                sock.close()


def test_saturation_answers_503_at_once_and_health_still_answers() -> None:
    """With every request slot taken by slow requests, the next one gets a quick 503, /health its answer."""
    import asyncio

    from mediasearch.serve.security import Boundary

    release = threading.Event()

    async def slow(scope: dict[str, Any], receive: Any, send: Any) -> None:
        while not release.is_set() and scope["path"] == "/slow":
            await asyncio.sleep(0.01)
        await _app(scope, receive, send)

    tokens = make_tokens(None, None, loopback=True)
    app = Boundary(slow, tokens, HostCheck.for_daemon(), max_in_flight=2)
    auth = f"X-Mediasearch-Token: {tokens.read}\r\n"

    def ask(port: int, path: str) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n".encode())
            return b"".join(iter(lambda: client.recv(4096), b""))

    with _server(max_connections=32, header_timeout=5.0, app=app) as port:
        waiting = [threading.Thread(target=ask, args=(port, "/slow")) for _ in range(2)]
        for thread in waiting:
            thread.start()
        while app._in_flight < 2:  # both slow requests are in
            time.sleep(0.01)
        try:
            busy = ask(port, "/status")
            assert busy.startswith(b"HTTP/1.1 503") and b"retry-after: 1" in busy.lower(), busy[:200]
            assert ask(port, "/health").startswith(b"HTTP/1.1 200")
        finally:
            release.set()
            for thread in waiting:
                thread.join(timeout=10)
        assert ask(port, "/status").startswith(b"HTTP/1.1 200")
