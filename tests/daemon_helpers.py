"""A real daemon in a subprocess for the tests that need one (serve, index faults, search), and the photos
they index: shared here so that test modules never import each other."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from child_env import settings_free_env
from fault_helpers import wait_until

from mediasearch.lab.shapes import render, save_image
from mediasearch.library.client import DaemonClient, DaemonError, read_port_file

MODEL = "demo"
OTHERS = [("blue", "star"), ("green", "square"), ("yellow", "triangle"), ("purple", "square"), ("blue", "square")]


def _env() -> dict[str, str]:
    return settings_free_env()


def _cli(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "mediasearch", "--home", str(home), "--model", MODEL, "--device", "cpu"]
    return subprocess.run([*command, *args], capture_output=True, text=True, env=_env(), timeout=timeout, check=False)


def photos(folder: Path, classes: list[tuple[str, str]], seed: int) -> list[Path]:
    """Rendered shape photos (PNG), one per class, written into ``folder``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, (colour, shape) in enumerate(classes):
        path = folder / f"{colour}_{shape}_{seed}_{i:02d}.png"
        save_image(render(colour, shape, rng=rng, size=(128, 128)), path, "png")
        out.append(path)
    return out


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """``wait_until`` at a tenth of a second: each status poll makes the daemon scan its store."""
    return wait_until(check, timeout, what, step=0.1)


class Daemon:
    """A `mediasearch serve` process and an HTTP client for it."""

    def __init__(self, home: Path, *args: str) -> None:
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        self.output = home.parent / f"{home.name}.serve.txt"
        command = [sys.executable, "-m", "mediasearch", "--home", str(home), "--model", MODEL, "--device", "cpu"]
        with open(self.output, "ab") as out:
            self.proc = subprocess.Popen([*command, "serve", *args], stdout=out, stderr=out, env=_env())
        self.client: DaemonClient | None = None

    def wait_ready(self, timeout: float = 120) -> Daemon:
        def ready() -> bool:
            if self.proc.poll() is not None:
                pytest.fail(f"the daemon exited ({self.proc.returncode}): {self.output.read_text()}")
            info = read_port_file(self.home)
            if info is None:
                return False
            self.client = DaemonClient(info)
            try:
                return self.client.health().get("state") == "ready"
            except DaemonError:  # slow to answer while it loads the model on a loaded machine: ask again
                return False

        wait_for(ready, timeout, "the daemon is ready")
        return self

    def call(self, method: str, path: str, body: Any = None) -> Any:
        assert self.client is not None
        return self.client.call(method, path, body)

    def status(self) -> dict[str, Any]:
        return dict(self.call("GET", "/status"))

    def idle(self) -> bool:
        info = self.status()["daemon"]
        return bool(info["last_scan"]) and not info["busy"] and info["pending_folders"] == 0

    def wait_idle(self, timeout: float = 60) -> None:
        wait_for(self.idle, timeout, "the daemon is idle")

    def wait_enriched(self, timeout: float = 180) -> None:
        """Idle, and the background enrichment pass (OCR, faces, places after the CLIP pass) is done."""

        def enriched() -> bool:
            signals = self.status()["enrichers"]
            return self.idle() and bool(signals) and all(s["pending"] == 0 for s in signals.values())

        wait_for(enriched, timeout, "the enrichment pass is done")

    def listing(self, folder: Path) -> set[str]:
        """Every indexed path under ``folder``, through a query."""
        hits = self.call("POST", "/query", {"text": "a photo", "limit": 500, "path_prefix": str(folder)})
        return {h["path"] for h in hits}

    def log_lines(self, needle: str) -> list[str]:
        log = self.home / "logs" / "daemon.log"
        return [line for line in log.read_text().splitlines() if needle in line]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)
