"""Helpers for the fault, bad-input, concurrency and daemon tests (importable from tests and worker processes).

``store_state`` reads everything a home's index holds; two homes built from the same files must give
equal states (same ids, payloads and vectors), however the index got there.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from child_env import settings_free_env

State = dict[str, tuple[dict[str, Any], np.ndarray]]


def store_state(home: Path) -> State:
    """id → (payload, vector) of every point in the home's active collection (opened directly)."""
    from mediasearch.store.collections import active_collection, open_store

    name = active_collection(home=home)
    if name is None:
        return {}
    with open_store(home=home, collection=name, dim=None, create=False, wait_s=30) as store:
        return {r.id: (r.payload, r.vector) for r in store.scroll(with_vectors=True) if r.vector is not None}


def assert_same_state(got: State, want: State, atol: float = 1e-4) -> None:
    """Same points, same payloads, vectors equal up to float noise (batching differs between runs)."""
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    assert not missing and not extra, (
        f"missing {[want[i][0]['path'] for i in missing][:5]}, extra {[got[i][0]['path'] for i in extra][:5]}"
    )
    for pid, (payload, vector) in want.items():
        assert got[pid][0] == payload, (got[pid][0], payload)
        np.testing.assert_allclose(got[pid][1], vector, atol=atol)


def cli_env() -> dict[str, str]:
    return settings_free_env()


def cli_command(home: Path, *args: str) -> list[str]:
    """``python -m mediasearch`` with the demo model on ``home``."""
    return [sys.executable, "-m", "mediasearch", "--home", str(home), "--model", "demo", "--device", "cpu", *args]


DROP_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]
"""A prefix that runs a command as root without the capabilities that override file permissions: it is
refused what mode bits refuse (a file of mode 000) like any user, yet still reads the checkout and its
virtual environment, which root owns wherever they live (an unprivileged user could not enter a
checkout in a folder only its owner may enter)."""


def run_cli(home: Path, *args: str, timeout: float = 300, drop_dac: bool = False) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a child process (without permission overrides when ``drop_dac``: see DROP_DAC)."""
    prefix = DROP_DAC if drop_dac else []
    return subprocess.run(
        [*prefix, *cli_command(home, *args)],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=timeout,
        check=False,
    )


def one_line_error(stderr: str) -> str:
    """The CLI's error line; fails unless stderr holds exactly that (no traceback)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def wait_until(check: Any, timeout: float, what: str, step: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(step)


def owner_pid(home: Path) -> int | None:
    """The pid written in the home's store owner file (the process holding the store), if any."""
    import json

    for owner in (home / "store").glob("*.owner"):
        try:
            return int(json.loads(owner.read_text())["pid"])
        except (OSError, ValueError, KeyError):
            continue
    return None


def kill9(proc: subprocess.Popen[Any]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


# -- decoders that misbehave, run in the decoding worker processes -----------------------------------


def hanging_decoder(path: str, **kwargs: Any) -> Any:
    """decord stuck on a broken file, for files whose name says "hang"; the real decoder otherwise."""
    from mediasearch.media.decode import sample_video

    if "hang" in os.path.basename(path):
        while True:
            time.sleep(60)
    if "crash" in os.path.basename(path):
        os.kill(os.getpid(), signal.SIGSEGV)
    return sample_video(path, **kwargs)


def niceness(path: str) -> int:
    """The worker process's own scheduling priority (its nice value)."""
    return os.getpriority(os.PRIO_PROCESS, 0)


def sleep_then_answer(path: str, *, seconds: float) -> str:
    """A decoder for the decoder pool's tests: sleeps, then answers the path it was given."""
    time.sleep(seconds)
    return path
