"""Find the daemon that serves a home and send it requests (stdlib only: every CLI command imports this).

The daemon writes ``HOME/daemon.json`` (pid, url, token, instance id; mode 0600) once its HTTP server
listens, and removes it on a clean exit. A file left by a daemon that died is removed by the first
client that finds nothing answering behind it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mediasearch import errors
from mediasearch.errors import MediaSearchError
from mediasearch.fsutil import atomic_write, pid_alive

if TYPE_CHECKING:
    import threading

    from mediasearch.index.options import Progress
    from mediasearch.library.types import Explanation
    from mediasearch.search.query import Hit, Query

PORT_FILE = "daemon.json"
HEALTH_TIMEOUT_S = 3.0
STARTING_WAIT_S = 180.0  # a daemon that is still loading its model is waited for this long
REQUEST_TIMEOUT_S = 300.0
TOKEN_HEADER = "X-Mediasearch-Token"


class DaemonError(MediaSearchError):
    """The daemon for a home could not be reached or did not answer properly."""


class _Unreachable(DaemonError):
    """Nothing listens at the daemon's address any more."""


@dataclass(frozen=True)
class DaemonInfo:
    """What the port file says about a running daemon."""

    pid: int
    url: str
    token: str
    instance: str
    host: str = ""
    hostname: str = ""
    started: float = 0.0
    read_token: str = ""  # searches and views only: the one to give the search page

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> DaemonInfo | None:
        try:
            return cls(
                pid=int(data["pid"]),
                url=str(data["url"]).rstrip("/"),
                token=str(data["token"]),
                instance=str(data["instance"]),
                host=str(data.get("host", "")),
                hostname=str(data.get("hostname", "")),
                started=float(data.get("started", 0.0)),
                read_token=str(data.get("read_token", "")),
            )
        except (KeyError, TypeError, ValueError):
            return None


def port_file(home: Path) -> Path:
    return Path(home) / PORT_FILE


def connect_url(host: str, port: int) -> str:
    """The URL a local client uses for a server bound to ``host`` (a wildcard means loopback)."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def write_port_file(home: Path, info: DaemonInfo) -> None:
    """Publish the daemon (atomically, readable by its owner only: it holds the token)."""
    path = port_file(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(info.to_json()), mode=0o600)


def read_port_file(home: Path) -> DaemonInfo | None:
    try:
        return DaemonInfo.from_json(json.loads(port_file(home).read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


def remove_port_file(home: Path, instance: str) -> None:
    """Remove the port file if it still describes ``instance`` (never a newer daemon's file)."""
    current = read_port_file(home)
    if current is not None and current.instance == instance:
        with contextlib.suppress(OSError):
            port_file(home).unlink()


class DaemonClient:
    """Requests to one daemon; errors come back as the MediaSearchError the daemon raised."""

    def __init__(self, info: DaemonInfo) -> None:
        self.info = info
        # Never through an HTTP proxy: the daemon is on this machine.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def call(self, method: str, path: str, body: Any = None, timeout: float | None = REQUEST_TIMEOUT_S) -> Any:
        """Send one request; returns the decoded JSON answer."""
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(self.info.url + path, data=data, method=method)
        request.add_header(TOKEN_HEADER, self.info.token)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with self._opener.open(request, timeout=timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise _error_from(exc) from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, ConnectionRefusedError):
                raise _Unreachable(f"nothing answers at {self.info.url}") from None
            raise DaemonError(f"the daemon at {self.info.url} did not answer: {exc.reason}") from None
        except TimeoutError:
            raise DaemonError(f"the daemon at {self.info.url} did not answer within {timeout} s") from None
        except (ConnectionError, ValueError) as exc:
            raise DaemonError(f"the daemon at {self.info.url} failed: {exc}") from None

    def health(self) -> dict[str, Any]:
        answer = self.call("GET", "/health", timeout=HEALTH_TIMEOUT_S)
        return answer if isinstance(answer, dict) else {}

    def query(self, query: Query, model: str | None = None) -> list[Hit]:
        from mediasearch.library.wire import from_json
        from mediasearch.search.query import Hit

        rows = self.call("POST", "/query", {**query_to_json(query), "model": model})
        return [from_json(Hit, row) for row in rows]

    def explain(self, query: Query, model: str | None = None) -> Explanation:
        from mediasearch.library.types import Explanation
        from mediasearch.library.wire import from_json

        body = {**query_to_json(query), "explain": True, "model": model}
        return from_json(Explanation, self.call("POST", "/query", body))

    def similar(self, path: str, query: Query, model: str | None = None) -> list[Hit]:
        from mediasearch.library.wire import from_json
        from mediasearch.search.query import Hit

        body = {**filters_to_json(query), "path": os.path.abspath(path), "model": model}
        return [from_json(Hit, row) for row in self.call("POST", "/similar", body)]

    def status(self) -> dict[str, Any]:
        return dict(self.call("GET", "/status"))

    def index(self, paths: Sequence[str], options: dict[str, Any], model: str | None = None) -> dict[str, Any]:
        body = {"paths": [os.path.abspath(p) for p in paths], "model": model, **options}
        return dict(self.call("POST", "/index", body, timeout=None))

    def forget(self, path: str) -> dict[str, Any]:
        return dict(self.call("POST", "/forget", {"path": os.path.abspath(path)}, timeout=None))

    def tag(self, labels: dict[str, float] | None, prompts: str | None = None) -> dict[str, Any]:
        """Tag with ``labels`` (each with its threshold), learned prompts, or (neither) the built-in vocabulary."""
        body: dict[str, Any] = {"prompts": os.path.abspath(prompts) if prompts else None}
        if labels is not None:
            body |= {"labels": list(labels), "thresholds": labels}
        return dict(self.call("POST", "/tag", body, timeout=None))

    def tags(self) -> dict[str, int]:
        return dict(self.call("GET", "/tags"))

    def places(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "/places"))

    def duplicates(self, paths: Sequence[str], threshold: float | None) -> list[dict[str, Any]]:
        body = {"paths": [os.path.abspath(p) for p in paths], "threshold": threshold}
        return list(self.call("POST", "/duplicates", body, timeout=None))


def _error_from(exc: urllib.error.HTTPError) -> MediaSearchError:
    """The daemon's ``{"error", "kind"}`` answer as the matching domain error."""
    try:
        body = json.loads(exc.read() or b"{}")
    except ValueError:
        body = {}
    message = body.get("error") if isinstance(body, dict) else None
    if not isinstance(message, str):
        detail = body.get("detail") if isinstance(body, dict) else None
        message = f"the daemon refused the request: HTTP {exc.code} {detail or exc.reason}"
    kind = getattr(errors, str(body.get("kind", "")) if isinstance(body, dict) else "", None)
    if isinstance(kind, type) and issubclass(kind, MediaSearchError):
        return kind(message)
    return DaemonError(message)


UPLOAD_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
UPLOAD_MAX_BYTES = 20 << 20  # the daemon's cap on a picture sent to search by


def filters_to_json(query: Query) -> dict[str, Any]:
    """A Query's limit, order and filters as the fields of the daemon's ``/query`` and ``/similar`` bodies."""
    near = dict(zip(("lat", "lon", "km"), query.near, strict=True)) if query.near is not None else None
    return {
        "limit": query.limit, "sort": query.sort, "kind": query.kind, "folder": query.path_prefix,
        "tags": list(query.tags), "after": query.after, "before": query.before, "near": near,
        "camera": query.camera, "place": query.place, "person": list(query.people), "ocr": list(query.ocr),
    }


def query_to_json(query: Query) -> dict[str, Any]:
    """A Query as the daemon's ``POST /query`` body: the text to read first (unless literal), then the terms;
    a picture this process can read is sent as its bytes (the daemon reads no path a request names unless
    it is indexed), others by absolute path."""
    terms = list(query.terms)
    body: dict[str, Any] = {**filters_to_json(query), "raw": query.raw, "min_score": query.min_score}
    body["literal"] = not query.parse_text
    if query.parse_text and terms and terms[0].kind == "text":
        first = terms.pop(0)
        body.update(text=first.value, weight=first.weight)
    body["terms"] = [_term_json({"kind": t.kind, "value": t.value, "weight": t.weight}) for t in terms]
    return body


def _term_json(term: dict[str, Any]) -> dict[str, Any]:
    if term["kind"] != "image":
        return term
    path = os.path.abspath(term["value"])
    try:
        small = os.path.getsize(path) <= UPLOAD_MAX_BYTES and path.lower().endswith(UPLOAD_SUFFIXES)
        if small:
            with open(path, "rb") as fh:
                encoded = base64.b64encode(fh.read()).decode("ascii")
            return {"kind": "image", "data": encoded, "weight": term["weight"]}
    except OSError:
        pass
    return {**term, "value": path}


def find_daemon(home: Path, *, wait_s: float = STARTING_WAIT_S) -> DaemonClient | None:
    """The live daemon serving ``home``, or None (and a stale port file removed).

    A daemon that is starting (loading its model, waiting for the store) or stopping is waited for,
    up to ``wait_s`` seconds.
    """
    info = read_port_file(home)
    if info is None:
        return None
    if info.hostname in ("", socket.gethostname()) and not pid_alive(info.pid):
        remove_port_file(home, info.instance)
        return None
    client = DaemonClient(info)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            health = client.health()
        except _Unreachable:
            remove_port_file(home, info.instance)
            return None
        if health.get("instance") != info.instance:  # another server took the port
            remove_port_file(home, info.instance)
            return None
        state = health.get("state")
        if state not in ("starting", "stopping"):
            return client  # ready, or busy in a way its answers explain
        if state == "stopping" and read_port_file(home) != info:
            return None  # it has let go of the store
        if time.monotonic() >= deadline:
            what = health.get("message") or state
            raise DaemonError(f"the daemon for {home} (pid {info.pid}) is not ready: {what}")
        time.sleep(0.2)


PROGRESS_POLL_S = 0.5


def follow_progress(client: DaemonClient, paths: Sequence[str], progress: Progress, worker: threading.Thread) -> None:
    """Show on ``progress`` the daemon's index run of ``paths`` (its status's ``indexing`` part) until
    ``worker``, which waits for the run's answer, is done: each phase (the CLIP pass, the enrichers) is
    started and finished as a local run does. Another run (a watched folder's) is not shown."""
    phase = shown_files = shown_frames = 0
    wanted = [os.path.realpath(p) for p in paths]
    while worker.is_alive():
        worker.join(PROGRESS_POLL_S)
        try:
            now = (client.status().get("daemon") or {}).get("indexing")
        except MediaSearchError:
            continue  # busy or restarting: the answer, or its error, comes from the worker
        if not isinstance(now, dict) or [os.path.realpath(p) for p in now.get("paths") or ()] != wanted:
            continue
        if int(now["phase"]) != phase:
            if phase:
                progress.finish()
            phase, shown_files, shown_frames = int(now["phase"]), 0, 0
            progress.start(int(now["files"]))
        files, frames = int(now["done"]), int(now["frames"])
        if files > shown_files or frames > shown_frames:
            progress.advance(files=files - shown_files, frames=frames - shown_frames)
            shown_files, shown_frames = files, frames
    if phase:
        progress.finish()
