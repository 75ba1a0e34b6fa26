"""A real `mediasearch serve` on a small library of shape photos, for the clients' tests (contract, generated
client, MCP). It runs in an empty working folder, so that a relative path a fuzzer sends names nothing."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from child_env import settings_free_env
from daemon_helpers import photos
from fault_helpers import wait_until

from mediasearch.library.client import DaemonClient, DaemonError, read_port_file

MODEL = "demo"
# Two red circles among other shapes: "a red circle" must find both before anything else.
CLASSES = [
    ("red", "circle"),
    ("blue", "star"),
    ("green", "square"),
    ("yellow", "triangle"),
    ("red", "circle"),
    ("purple", "star"),
]


@dataclass
class Served:
    home: Path
    lib: Path
    proc: subprocess.Popen[bytes]
    client: DaemonClient

    @property
    def url(self) -> str:
        return self.client.info.url

    @property
    def token(self) -> str:
        return self.client.info.token

    def alive(self) -> bool:
        return self.proc.poll() is None


def env() -> dict[str, str]:
    """This environment (PYTHONPATH included: the worktree first) without MEDIASEARCH_* settings, offline."""
    return settings_free_env()


def command(home: Path) -> list[str]:
    return [sys.executable, "-m", "mediasearch", "--home", str(home), "--model", MODEL, "--device", "cpu"]


@contextlib.contextmanager
def served_library(base: Path, classes: list[tuple[str, str]] = CLASSES, seed: int = 5) -> Iterator[Served]:
    """Render ``classes`` into ``base/lib``, serve it from ``base/home``, wait until it is indexed; stop it after."""
    lib, home, cwd = base / "lib", base / "home", base / "cwd"
    photos(lib, classes, seed=seed)
    cwd.mkdir(parents=True, exist_ok=True)
    log = (base / "serve.log").open("ab")
    args = [*command(home), "serve", str(lib), "--rescan-every", "off", "--debounce", "60"]
    proc = subprocess.Popen(args, stdout=log, stderr=log, env=env(), cwd=cwd)
    try:
        client = wait_until(lambda: _ready(proc, home, base), 180, "the daemon is ready", step=0.2)
        served = Served(home, lib, proc, client)
        wait_until(lambda: _indexed(served, len(classes)), 120, "the library is indexed", step=0.2)
        yield served
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def _ready(proc: subprocess.Popen[bytes], home: Path, base: Path) -> DaemonClient | None:
    if proc.poll() is not None:
        raise AssertionError(f"the daemon exited ({proc.returncode}): {(base / 'serve.log').read_text()}")
    info = read_port_file(home)
    if info is None:
        return None
    client = DaemonClient(info)
    try:
        return client if client.health().get("state") == "ready" else None
    except DaemonError:  # slow to answer while it loads the model on a loaded machine: ask again
        return None


def _indexed(served: Served, files: int) -> bool:
    status = served.client.call("GET", "/status")
    return bool(status["files"] == files and status["daemon"]["last_scan"] and not status["daemon"]["busy"])
