"""The daemon's trust boundary, in front of every route: the Host allow-list, limits that hold before
authentication (connections, header time, body size, requests in flight), the two roles, and a log
that a flood of errors cannot fill.

Roles. A *read* token searches and views (query, similar, duplicates, status, tags, thumbnails,
media, the page); an *admin* token also changes the index and names paths (index, forget, tag).
An unknown ``POST`` needs the admin token: a route that only reads says so in `READ_POSTS`.

Order of checks, cheapest first, none of which reads a body: Host (400), too many requests in flight
(503), the token (401) and its role (403), the body's declared size (413); the body is then counted
as it arrives and cut off at its cap (413). Connections are capped and given a time limit for their
headers in the HTTP protocol itself (`guarded_protocol`), below the app.

Only the standard library at import time; uvicorn and h11 are imported where the protocol is built.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import secrets
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mediasearch.errors import ConfigError, redact
from mediasearch.library.client import TOKEN_HEADER

ADMIN = "admin"
READ = "read"

MAX_JSON_BYTES = 1 << 20  # a JSON request body (a query's texts, an index request's paths, labels)
MAX_UPLOAD_BYTES = 20 << 20  # a picture sent to search by, decoded
MAX_UPLOAD_BODY_BYTES = MAX_UPLOAD_BYTES * 4 // 3 + (1 << 20)  # the same in base64, with the rest of the query
MAX_TERMS = 32  # texts and images in one query
MAX_FRAMES = 10_000  # frames sampled per video, whatever a request asks
MAX_LABELS = 1_000  # labels in a vocabulary sent to /tag (the built-in one has 302)
DEFAULT_THRESHOLD = 0.5  # a label's threshold when a vocabulary sent to /tag gives none (as in a vocabulary file)
HEADER_TIMEOUT_S = 10.0  # a connection must have sent its request's headers by then
MAX_IN_FLIGHT = 64  # requests being answered at once; more get a quick 503
MIN_TOKEN_LENGTH = 16

PUBLIC_PATHS = frozenset({"/health", "/", "/openapi.json"})
PUBLIC_PREFIXES = ("/static/",)
READ_POSTS = frozenset({"/query", "/similar", "/duplicates", "/text"})
# Routes whose body may carry a picture (an image term's bytes): the larger cap.
UPLOAD_PATHS = frozenset({"/query"})
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


class AccessError(Exception):
    """A request refused at the boundary: the status and the one line to answer with."""

    def __init__(self, status: int, message: str, kind: str) -> None:
        super().__init__(message)
        self.status, self.kind = status, kind


@dataclass(frozen=True)
class Tokens:
    """The daemon's two tokens: ``admin`` (the local CLI's, in the 0600 port file) and ``read``."""

    admin: str
    read: str

    def __post_init__(self) -> None:
        if secrets.compare_digest(self.admin.encode(), self.read.encode()):
            raise ConfigError("the read token must differ from the admin token")

    def role(self, given: str | None) -> str | None:
        """``admin``, ``read`` or None for a token as sent (compared in constant time)."""
        if not given:
            return None
        raw = given.encode("utf-8", "surrogateescape")
        if secrets.compare_digest(raw, self.admin.encode()):
            return ADMIN
        if secrets.compare_digest(raw, self.read.encode()):
            return READ
        return None


def read_token_file(path: Path) -> str:
    """A token kept in a file (its first line); never a command line's text, which any user can list."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the token file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    token = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not token:
        raise ConfigError(f"the token file {path} is empty")
    return token


def make_tokens(admin: str | None, read: str | None, *, loopback: bool) -> Tokens:
    """The daemon's tokens: those given (from files or the environment), else new random ones. Off
    loopback both must be given and long enough."""
    for name, value in (("admin", admin), ("read", read)):
        if value is not None and len(value) < MIN_TOKEN_LENGTH:
            raise ConfigError(f"the {name} token must be at least {MIN_TOKEN_LENGTH} characters long")
    if not loopback and admin is None:
        raise ConfigError("a daemon that listens beyond loopback needs an admin token from a file or the environment")
    return Tokens(admin or secrets.token_urlsafe(24), read or secrets.token_urlsafe(24))


def required_role(method: str, path: str) -> str | None:
    """The role a request needs: None for the public routes (health, the page, the spec)."""
    if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
        return None
    if method in ("GET", "HEAD", "OPTIONS") or path in READ_POSTS:
        return READ
    return ADMIN


def body_limit(path: str) -> int:
    """The most bytes a request body to ``path`` may have."""
    return MAX_UPLOAD_BODY_BYTES if path in UPLOAD_PATHS else MAX_JSON_BYTES


# -- the Host header ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostCheck:
    """Which ``Host`` headers the daemon answers: an IP address (a page that rebinds a DNS name to this
    machine can never send one), loopback names, this machine's names, and the names configured."""

    names: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def for_daemon(cls, extra: Iterable[str] = ()) -> HostCheck:
        mine = {socket.gethostname(), socket.getfqdn()}
        return cls(frozenset(n.lower().rstrip(".") for n in {*LOOPBACK_NAMES, *mine, *extra} if n))

    def allows(self, host_header: str | None) -> bool:
        if host_header is None:  # HTTP/1.0 without a Host: no browser sends that
            return True
        host = _host_name(host_header)
        if host is None:
            return False
        try:
            ipaddress.ip_address(host)
            return True
        except ValueError:
            pass
        return host in self.names or host.endswith(".localhost")


def _host_name(header: str) -> str | None:
    """The name or address in a Host header, without its port or brackets; None if malformed."""
    header = header.strip().lower().rstrip(".")
    if header.startswith("["):
        end = header.find("]")
        return header[1:end] if end > 0 else None
    name, _, port = header.partition(":")
    if port and not port.isdigit():
        return None
    return name.rstrip(".") or None


# -- the middleware ----------------------------------------------------------------------------------

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Boundary:
    """ASGI middleware: every check that must come before the app reads a body or runs a route.

    The role found is left in ``scope["state"]["role"]`` for the routes' own dependencies."""

    def __init__(self, app: ASGIApp, tokens: Tokens, hosts: HostCheck, max_in_flight: int = MAX_IN_FLIGHT) -> None:
        self.app, self.tokens, self.hosts, self.max_in_flight = app, tokens, hosts, max_in_flight
        self._in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        counted = scope["path"] != "/health"  # health stays answerable under load
        try:
            self._check(scope, counted)
        except AccessError as refused:
            await _refuse(send, refused)
            return
        if counted:
            self._in_flight += 1
        try:
            await self.app(scope, _capped(receive, body_limit(scope["path"])), send)
        finally:
            if counted:
                self._in_flight -= 1

    def _check(self, scope: Scope, counted: bool) -> None:
        headers = _headers(scope)
        if not self.hosts.allows(headers.get("host")):
            raise AccessError(400, "this Host is not allowed: add it with serve --allow-host NAME", "HostNotAllowed")
        if counted and self._in_flight >= self.max_in_flight:
            raise AccessError(503, "the daemon is busy: try again shortly", "NotReadyError")
        needed = required_role(scope["method"], scope["path"])
        if needed is not None:
            role = self.tokens.role(_token_of(headers, scope.get("query_string", b"")))
            if role is None:
                raise AccessError(
                    401, f"a valid token is required (header {TOKEN_HEADER}, Bearer, or ?token=)", "Unauthorized"
                )
            if needed == ADMIN and role != ADMIN:
                raise AccessError(403, "this needs the admin token (the read token searches and views)", "Forbidden")
            scope.setdefault("state", {})["role"] = role
        declared = headers.get("content-length")
        limit = body_limit(scope["path"])
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            raise AccessError(413, _too_large(limit), "PayloadTooLarge")


def _too_large(limit: int) -> str:
    return f"the request body is larger than {limit >> 10} KiB (see docs/security.md for the limits)"


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}


def _token_of(headers: dict[str, str], query_string: bytes) -> str | None:
    """The token as a client sends it: our header, ``Authorization: Bearer``, or ``?token=``."""
    from urllib.parse import parse_qs

    given = headers.get(TOKEN_HEADER.lower())
    if given:
        return given
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    values = parse_qs(query_string.decode("latin-1")).get("token")
    return values[0] if values else None


def _capped(receive: Receive, limit: int) -> Receive:
    """``receive`` that counts the body's bytes and refuses more than ``limit`` (chunked bodies too):
    an HTTP error the app answers (413), closing the connection rather than reading the rest."""
    seen = 0

    async def wrapped() -> Message:
        from starlette.exceptions import HTTPException

        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise HTTPException(413, _too_large(limit), headers={"Connection": "close"})
        return message

    return wrapped


async def _refuse(send: Send, refused: AccessError) -> None:
    body = json.dumps({"error": str(refused), "kind": refused.kind}).encode()
    # Closed after the answer: an unread body must not keep the connection (and its memory) open.
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    if refused.status == 503:
        headers.append((b"retry-after", b"1"))
    if refused.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": refused.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# -- connections: a cap, and a time limit for headers ----------------------------------------------


def connection_cap() -> int:
    """How many connections the daemon keeps open: a quarter of its file descriptors (after raising
    the soft limit to the hard one), between 32 and 512; the rest are for the store and the decoders."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 4096)
        if soft != resource.RLIM_INFINITY and soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, 65536), hard))
            soft = min(wanted, 65536)
    except (ImportError, ValueError, OSError):
        soft = 1024
    return max(32, min(512, int(soft) // 4))


def guarded_protocol(max_connections: int, header_timeout: float = HEADER_TIMEOUT_S) -> type:
    """uvicorn's h11 protocol with two limits below the app: a connection that has not sent its
    headers within ``header_timeout`` is closed; past ``max_connections``, a new connection evicts the
    oldest one that is waiting for headers (so a crowd of half-open sockets cannot lock clients out),
    or, when every connection is busy with a request, gets a 503 at once."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    answer = b'{"error": "the daemon is busy: try again", "kind": "NotReadyError"}'
    busy = (
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
        b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(answer), answer)
    )

    class GuardedProtocol(H11Protocol):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._opened = time.monotonic()
            self._header_timer: Any = None
            if len(self.connections) > max_connections and not self._evict_one():
                transport.write(busy)
                transport.close()
                return
            self._arm()

        def _waiting(self) -> bool:
            """Between requests or inside a request's headers: nothing of ours is running."""
            return bool(self.conn.their_state is h11.IDLE and (self.cycle is None or self.cycle.response_complete))

        def _evict_one(self) -> bool:
            others: list[Any] = [c for c in self.connections if c is not self and isinstance(c, GuardedProtocol)]
            waiting = [c for c in others if c._waiting() and not c.transport.is_closing()]
            if not waiting:
                return False
            min(waiting, key=lambda c: c._opened).transport.close()
            return True

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(header_timeout, self._headers_too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if self._waiting() and not self.transport.is_closing():
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:  # the headers are in
                self._disarm()
            else:
                self._arm()  # a keep-alive connection that starts, slowly, a next request

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return GuardedProtocol


# -- logs ----------------------------------------------------------------------------------------------


class FloodFilter(logging.Filter):
    """Messages redacted; and from the server's libraries (the event loop, uvicorn: what a crowd of
    sockets makes them say), at most ``burst`` records per ``per`` seconds from one place in their
    code, the rest dropped and counted (the next record that passes says how many were). The daemon's
    own lines (one per file indexed) are bounded by its work and always pass."""

    def __init__(self, burst: int = 20, per: float = 10.0) -> None:
        super().__init__()
        self.burst, self.per = burst, per
        self._windows: dict[tuple[str, int], tuple[float, int]] = {}
        self._dropped = 0
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("mediasearch"):
            record.msg, record.args = redact(record.getMessage()), None
            return True
        now = time.monotonic()
        key = (record.pathname, record.lineno)
        with self._lock:
            start, count = self._windows.get(key, (now, 0))
            if now - start >= self.per:
                start, count = now, 0
            self._windows[key] = (start, count + 1)
            if count >= self.burst:
                self._dropped += 1
                return False
            dropped, self._dropped = self._dropped, 0
        message = redact(record.getMessage())
        if record.exc_info and count >= 1:  # the same failure again: its line, not its traceback
            record.exc_info, record.exc_text = None, None
        if dropped:
            message += f" ({dropped} similar log lines dropped)"
        record.msg, record.args = message, None
        return True
