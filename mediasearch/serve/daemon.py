"""The daemon's process (`mediasearch serve` / `watch`): one per home, the one owner of its store.

Threads: the main thread runs the model's CPU work (`lane.py`) until SIGTERM/SIGINT; uvicorn serves
the HTTP API (`api.py`) in its own thread; the service (`service.py`) runs every write on one "index"
worker and turns settled file-system events and the rescan schedule into jobs for it. Queries run in
the HTTP threads on the same open store, handing their encoding to the main thread while it is idle.

Stopping abandons the index run in flight before its next write, so every file in the store is
whole; a kill -9 loses at most the batch being encoded. Either way the next start rescans the roots
and catches up (point ids are deterministic: nothing is ever duplicated).
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from mediasearch import lane
from mediasearch.errors import ConfigError
from mediasearch.fsutil import make_private
from mediasearch.library.client import (
    DaemonError,
    DaemonInfo,
    connect_url,
    find_daemon,
    remove_port_file,
    write_port_file,
)
from mediasearch.serve.changes import changes, points_changed
from mediasearch.serve.options import DaemonOptions, check_binding, is_loopback, parse_interval
from mediasearch.serve.security import (
    HEADER_TIMEOUT_S,
    FloodFilter,
    HostCheck,
    connection_cap,
    guarded_protocol,
    make_tokens,
)
from mediasearch.serve.service import LOG_NAME, NotIndexedError, NotReadyError, Service
from mediasearch.settings import Settings

# The daemon's parts, importable from here as before the split.
__all__ = [
    "DaemonOptions", "NotIndexedError", "NotReadyError", "Service", "changes", "check_binding", "is_loopback",
    "parse_interval", "points_changed", "serve",
]

LOG_FILE = Path("logs") / "daemon.log"
# asyncio accepts up to the backlog in one go: a burst of a thousand connections would hold the loop
# (and /health) for a second; smaller batches let it answer in between.
ACCEPT_BATCH = 128


def setup_logging(home: Path, echo: bool) -> logging.Logger:
    """One line per event in ``HOME/logs/daemon.log`` (rotated); warnings (or everything) on stderr."""
    path = home / LOG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    file_handler = logging.handlers.RotatingFileHandler(path, maxBytes=5 << 20, backupCount=5, encoding="utf-8")
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    flood = FloodFilter()  # redacts, and keeps a storm of one error (a full disk, a flood of sockets) short
    file_handler.addFilter(flood)
    console.addFilter(flood)
    console.setLevel(logging.INFO if echo else logging.WARNING)
    log = logging.getLogger(LOG_NAME)
    log.setLevel(logging.INFO)
    log.propagate = False
    for old in list(log.handlers):
        log.removeHandler(old)
    log.addHandler(file_handler)
    log.addHandler(console)
    server_log = logging.getLogger("uvicorn.error")
    server_log.setLevel(logging.WARNING)
    server_log.addHandler(file_handler)
    # The event loop's own errors (e.g. "socket.accept() out of system resource", with a traceback each
    # time) go to the log, once per burst, instead of stderr without limit.
    loop_log = logging.getLogger("asyncio")
    loop_log.propagate = False
    for old in list(loop_log.handlers):
        loop_log.removeHandler(old)
    loop_log.addHandler(file_handler)
    return log


# -- the process ----------------------------------------------------------------------------------


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything slow happens (port 0: any free port)."""
    address = "127.0.0.1" if host == "localhost" else host
    sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


class HttpServer:
    """uvicorn in a thread of its own, so that the main thread keeps the signals."""

    def __init__(self, app: Any, sock: socket.socket) -> None:
        import uvicorn

        # h11 with a cap on connections and a time limit for headers (security.guarded_protocol).
        protocol = guarded_protocol(connection_cap(), HEADER_TIMEOUT_S)
        config = uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="off", ws="none", timeout_graceful_shutdown=3,
            http=protocol, timeout_keep_alive=5, h11_max_incomplete_event_size=64 << 10, backlog=ACCEPT_BATCH,
        )
        self.server = uvicorn.Server(config)
        self.sock = sock
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, name="http", daemon=True)

    def start(self, timeout: float = 30.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise DaemonError("the HTTP server did not start (see the log)")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        with contextlib.suppress(OSError):
            self.sock.close()


def _stop_on_signals(service: Service) -> threading.Event:
    """SIGTERM / SIGINT stop the daemon cleanly; a second one leaves at once (a restart catches up)."""
    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            os._exit(128 + signum)
        service.stop_reason = f"received {signal.Signals(signum).name}"
        stop.set()
        service.cancel.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


LOCK_FILE = "daemon.lock"
ORPHAN_WAIT_S = 30.0  # how long a lock held only by a dead daemon's helper processes is waited for


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _claim_home(home: Path) -> IO[str]:
    """The home's daemon lock (an exclusive ``flock`` on ``HOME/daemon.lock``, held for the process's
    life and dropped by the kernel when it dies), taken before binding or opening anything: a second
    ``serve`` for the home leaves at once, naming the first, instead of waiting to own the store."""
    path = home / LOCK_FILE
    fh = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the life of the process
    deadline = time.monotonic() + ORPHAN_WAIT_S
    while True:
        try:
            import fcntl

            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except ImportError:  # no flock (Windows): the port file's check below still holds
            break
        except OSError:
            fh.seek(0)
            holder = fh.read().strip()
            pid = int(holder.split(",")[0].removeprefix("pid ")) if holder.startswith("pid ") else 0
            # A daemon killed with -9 leaves its forked helpers holding the lock for a moment: wait for them.
            if pid and not _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
                continue
            fh.close()
            raise ConfigError(f"a daemon already serves {home} ({holder or 'starting'}): stop it first") from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()}, mediasearch serve")  # the program, never its command line
    fh.flush()
    return fh


def _already_served(home: Path) -> bool:
    try:
        return find_daemon(home, wait_s=0) is not None
    except DaemonError:
        return True  # there, but starting or not answering


def serve(settings: Settings, options: DaemonOptions, announce: Callable[[DaemonInfo], None] | None = None) -> None:
    """Run the daemon for ``settings.home`` until SIGTERM or SIGINT."""
    check_binding(options.host, options.token)
    tokens = make_tokens(options.token, options.read_token, loopback=is_loopback(options.host))
    os.umask(0o077)  # everything this process writes in the home is its owner's alone
    make_private(settings.home)
    claim = _claim_home(settings.home)
    if _already_served(settings.home):
        raise ConfigError(f"a daemon already serves {settings.home} (see {settings.home / 'daemon.json'})")
    log = setup_logging(settings.home, options.echo)
    sock = bind(options.host, options.port)
    port = int(sock.getsockname()[1])
    url = connect_url(options.host, port)
    info = DaemonInfo(
        os.getpid(), url, tokens.admin, uuid.uuid4().hex, options.host, socket.gethostname(), time.time(),
        read_token=tokens.read,
    )
    service = Service(settings, options, log)
    service.info = info
    from mediasearch.serve.api import create_app

    hosts = HostCheck.for_daemon([*options.allowed_hosts, *([] if is_loopback(options.host) else [options.host])])
    app = create_app(service, tokens, instance=lambda: {"instance": info.instance, "pid": info.pid}, hosts=hosts)
    http = HttpServer(app, sock)
    stop = _stop_on_signals(service)
    http.start()
    write_port_file(settings.home, info)
    log.info("serving %s at %s (pid %d)", settings.home, url, info.pid)
    if announce is not None:
        announce(info)
    try:
        with lane.serving() as compute:  # the model's CPU work runs on this thread (see lane.py)
            service.start()
            compute.serve(stop)
        log.info("stopping: %s", service.stop_reason)
    finally:
        service.stop()
        http.stop()
        remove_port_file(settings.home, info.instance)
        log.info("stopped")
        claim.close()
