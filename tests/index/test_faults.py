"""The fault suite: crashes, files changing under the indexer, unreadable files, a full disk.

Each fault is followed by a plain re-run, which must reach exactly the state of a clean run over the
same files (same point ids, payloads and vectors), with the store readable throughout.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fault_helpers import (
    assert_same_state,
    cli_command,
    cli_env,
    kill9,
    one_line_error,
    owner_pid,
    run_cli,
    store_state,
    wait_until,
)
from test_index import shape_photos

from mediasearch.index import runner as indexer

pytestmark = pytest.mark.faults


def clean_state(cli: Any, name: str, *paths: Path) -> Any:
    """The state a clean run over ``paths`` reaches, in a fresh home next to the test's."""
    other = type(cli)(cli.home.parent / name)
    other.json("index", *map(str, paths))
    return store_state(other.home)


# -- kill -9 (and Ctrl-C, SIGTERM) at random points of `index` ---------------------------------------


def _log_blocks(home: Path) -> int:
    """Disk blocks in use by the store's write-ahead log: they grow with every write."""
    return sum(f.stat().st_blocks for f in (home / "store").glob("*/wal/*") if f.is_file())


class Timed:
    """A CLI `index` child, with the moment it took the store (its writes begin a little later)."""

    def __init__(self, home: Path, lib: Path) -> None:
        self.home = home
        command = cli_command(home, "index", str(lib), "--batch-size", "4", "--json")
        self.proc = subprocess.Popen(command, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.opened = 0.0

    def wait_open(self) -> float:
        wait_until(lambda: owner_pid(self.home) == self.proc.pid or self.proc.poll() is not None, 120, "store opened")
        self.opened = time.monotonic()
        return self.opened

    def wait_first_write(self) -> None:
        """Until the run's first write (or its end)."""
        blocks = _log_blocks(self.home)

        def written() -> bool:
            return self.proc.poll() is not None or (
                time.monotonic() - self.opened > 0.3 and _log_blocks(self.home) != blocks
            )

        wait_until(written, 120, "the first write", step=0.01)

    def writes(self) -> tuple[float, float]:
        """Follow the run to its end: when (after opening the store) its writes began and ended."""
        blocks, first, last = _log_blocks(self.home), None, 0.0
        while self.proc.poll() is None:
            now, grown = time.monotonic() - self.opened, _log_blocks(self.home)
            if grown != blocks and now > 0.3:  # later than creating the store's field indexes
                first, last = first if first is not None else now, now
            blocks = grown
            time.sleep(0.01)
        _, err = self.proc.communicate()
        assert self.proc.returncode == 0 and first is not None, err
        return first, last


@pytest.fixture(scope="module")
def killable(
    tmp_path_factory: pytest.TempPathFactory, make_video_module: Callable[..., Path]
) -> tuple[Path, Any, tuple[float, float]]:
    """A library (150 photos, a 12 s video), its clean index state, and when a run writes (from opening)."""
    base = tmp_path_factory.mktemp("killable")
    lib = base / "lib"
    shape_photos(lib, 150)
    make_video_module(lib / "clip.mp4", seconds=12.0)
    clean = Timed(base / "clean", lib)
    clean.wait_open()
    window = clean.writes()
    return lib, store_state(base / "clean"), window


@pytest.fixture(scope="module")
def make_video_module(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    import importlib.util

    # The root conftest by its file: the name "conftest" may be another folder's (tests/ocr, tests/faces).
    spec = importlib.util.spec_from_file_location("_root_conftest", Path(__file__).parents[1] / "conftest.py")
    assert spec is not None and spec.loader is not None
    root = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(root)
    DEFAULT_VIDEO_COLORS, _write_video = root.DEFAULT_VIDEO_COLORS, root._write_video  # noqa: N806

    def make(path: Path, seconds: float = 6.0) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_video(path, seconds, 8, (160, 120), DEFAULT_VIDEO_COLORS, 16, 0, True, False, False, None)
        return path

    return make


@pytest.mark.parametrize(
    ("seed", "signals"),
    [
        (1, (signal.SIGKILL, signal.SIGKILL)),
        (2, (signal.SIGINT, signal.SIGKILL)),
        (3, (signal.SIGTERM, signal.SIGKILL)),
    ],
)
def test_interrupted_index_then_rerun_equals_clean_run(
    tmp_path: Path, cli: Any, killable: tuple[Path, Any, tuple[float, float]], seed: int, signals: tuple[int, ...]
) -> None:
    """Stop `index` at random moments of its writing (a re-run may be stopped too), then run it again."""
    lib, want, (first, last) = killable
    home = tmp_path / "home"
    rng = random.Random(seed)
    for sig in signals:
        victim = Timed(home, lib)
        victim.wait_open()
        victim.wait_first_write()
        time.sleep(rng.uniform(0.0, 0.8) * (last - first))
        victim.proc.send_signal(sig)
        _, err = victim.proc.communicate(timeout=60)
        if sig != signal.SIGKILL and victim.proc.returncode != 0:  # not finished first: stopped cleanly
            assert victim.proc.returncode == 130, err
            assert one_line_error(err) == "error: interrupted; run the same command again to resume"
        partial = store_state(home)  # readable after every stop
        print(f"seed {seed}: {signal.Signals(sig).name} -> {len(partial)} of {len(want)} points written")
    type(cli)(home).json("index", str(lib), "--batch-size", "4")
    assert_same_state(store_state(home), want)


LATE_SIGNAL = """
import os, signal, sys, typer
from mediasearch.cli import core as cli

@cli.app.command("work")
@cli.handles_errors
def work(ctx: typer.Context, interrupt: bool = False) -> None:
    if interrupt:  # a signal while the command works: it stops cleanly, status 130
        os.kill(os.getpid(), signal.SIGNUM)
    print("done")
    # ...and one when its work is over, while the process is exiting: it finishes exiting as it was
    ctx.call_on_close(lambda: os.kill(os.getpid(), signal.SIGNUM))

sys.argv = ["mediasearch", "work", *sys.argv[1:]]
cli.main()
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_after_the_work_is_over_changes_nothing(signum: int) -> None:
    code = LATE_SIGNAL.replace("SIGNUM", signal.Signals(signum).name)
    late = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), timeout=120)
    assert (late.returncode, late.stdout, late.stderr) == (0, "done\n", "")
    stopped = subprocess.run(
        [sys.executable, "-c", code, "--interrupt"], capture_output=True, text=True, env=cli_env(), timeout=120
    )
    assert stopped.returncode == 130 and stopped.stdout == ""
    assert one_line_error(stopped.stderr) == "error: interrupted; run the same command again to resume"


def test_daemon_kill9_mid_index_then_restart_equals_clean_run(
    tmp_path: Path, killable: tuple[Path, Any, tuple[float, float]]
) -> None:
    from daemon_helpers import Daemon

    from mediasearch.library.client import find_daemon, port_file

    lib, want, _ = killable
    home = tmp_path / "home"
    first = Daemon(home, str(lib), "--rescan-every", "off").wait_ready()
    wait_until(lambda: first.status()["files"] >= 5, 120, "indexing has begun")
    kill9(first.proc)
    assert port_file(home).exists()  # left behind by the crash
    partial = store_state(home)  # the store opens and reads: the kernel dropped the dead owner's lock
    assert 0 < len(partial) <= len(want)
    print(f"daemon: SIGKILL -> {len(partial)} of {len(want)} points written")
    assert find_daemon(home) is None and not port_file(home).exists()  # the stale port file is cleared

    second = Daemon(home, "--rescan-every", "off").wait_ready()  # the roots are remembered
    try:
        second.wait_idle(timeout=120)
        second.wait_enriched()
    finally:
        assert second.stop() == 0
    assert_same_state(store_state(home), want)


# -- files and folders that change between discovery and decoding -----------------------------------


@pytest.fixture
def before_decoding(monkeypatch: pytest.MonkeyPatch) -> Callable[[str, Callable[[], None]], None]:
    """``before_decoding(name, action)``: run ``action`` once, just before the file ``name`` is decoded."""
    actions: dict[str, Callable[[], None]] = {}
    real = indexer.decode_file

    def decode_file(entry: Any, *args: Any) -> Any:
        action = actions.pop(os.path.basename(entry.path), None)
        if action is not None:
            action()
        return real(entry, *args)

    monkeypatch.setattr(indexer, "decode_file", decode_file)
    return actions.__setitem__


def _change(path: Path, change: str, replacement: Path) -> None:
    if change == "deleted":
        path.unlink()
    elif change == "truncated":
        os.truncate(path, path.stat().st_size // 3)
    elif change == "replaced":
        shutil.copy(replacement, path)
    else:  # a FIFO in its place: a plain open() would wait forever for a writer
        path.unlink()
        os.mkfifo(path)


@pytest.mark.parametrize("change", ["deleted", "truncated", "replaced", "fifo"])
def test_file_changed_between_discovery_and_decoding(
    tmp_path: Path,
    cli: Any,
    make_video: Callable[..., Path],
    before_decoding: Callable[[str, Callable[[], None]], None],
    change: str,
) -> None:
    lib = tmp_path / "lib"
    photo = shape_photos(lib, 8)[3]
    video = make_video(lib / "clip.mp4", seconds=6.0, noise=True)
    (other_photo,) = shape_photos(tmp_path / "other", 1, seed=5, size=(200, 150))
    other_video = make_video(tmp_path / "other" / "clip.mp4", seconds=4.0, colors=[(0, 0, 255), (255, 255, 0)])
    before_decoding(photo.name, lambda: _change(photo, change, other_photo))
    before_decoding(video.name, lambda: _change(video, change, other_video))
    first = cli.json("index", str(lib))  # finishes: no crash, no hang
    assert first["scanned"] == 9
    reported = {e["path"]: e["error"] for e in first["errors"]}
    if change in ("deleted", "fifo"):
        assert set(reported) == {str(photo), str(video)} and first["added"] == 7
        reason = "no such file or directory" if change == "deleted" else "not a regular file any more"
        assert all(reason in r for r in reported.values()), reported
    if change == "truncated":
        assert reported[str(photo)] == "truncated image"
    if change == "replaced":
        assert first["failed"] == 0
    cli.json("index", str(lib))
    assert_same_state(store_state(cli.home), clean_state(cli, "clean", lib))


def test_folder_renamed_mid_run(
    tmp_path: Path, cli: Any, before_decoding: Callable[[str, Callable[[], None]], None]
) -> None:
    """Renamed while its files were being indexed: some were written under the old name, the rest fail."""
    lib = tmp_path / "lib"
    album = shape_photos(lib / "album", 12)
    shape_photos(lib / "loose", 4, seed=1)
    before_decoding(album[6].name, lambda: (lib / "album").rename(lib / "album 2024"))
    first = cli.json("index", str(lib))
    assert first["failed"] >= 1 and all("no such file" in e["error"] for e in first["errors"])
    assert all(os.path.isfile(p["path"]) or "/album/" in p["path"] for p, _ in store_state(cli.home).values())
    again = cli.json("index", str(lib))
    assert again["removed"] == 0 and again["failed"] == 0  # the old paths' vectors moved, not dropped
    assert again["moved"] == 12 - first["failed"]
    assert_same_state(store_state(cli.home), clean_state(cli, "clean", lib))


# -- permission denied -----------------------------------------------------------------------------


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv to drop the override capabilities"
)
def test_permission_denied_files_and_folders(tmp_path: Path, cli: Any) -> None:
    """Without permission overrides: unreadable files and folders are reported, what is indexed under them kept."""
    lib, home = tmp_path / "lib", tmp_path / "home"
    shape_photos(lib, 6)
    private = lib / "private"
    shape_photos(private, 3, seed=3)
    type(cli)(home).json("index", str(lib))
    (locked_file,) = shape_photos(lib / "more", 1, seed=2)  # new since, and unreadable
    locked_file.chmod(0o000)
    private.chmod(0o000)

    denied = run_cli(home, "index", str(lib), "--json", drop_dac=True)
    assert denied.returncode == 0, denied.stderr
    summary = json.loads(denied.stdout)
    errors = {e["path"]: e["error"] for e in summary["errors"]}
    assert errors == {str(locked_file): "cannot read file: permission denied", str(private): "permission denied"}
    assert (summary["removed"], summary["unchanged"], summary["added"]) == (0, 6, 0)
    assert len(store_state(home)) == 9  # the 3 files under the unreadable folder are kept

    locked_file.chmod(0o644)
    private.chmod(0o755)
    cli_again = type(cli)(home)
    assert cli_again.json("index", str(lib))["added"] == 1
    assert_same_state(store_state(home), clean_state(cli, "clean", lib))


# -- a full disk -----------------------------------------------------------------------------------


def test_full_disk_injected_mid_run(tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file system reports no free space part-way: a clear error, the store intact, a re-run completes."""
    from mediasearch.store import base as store_module

    lib = tmp_path / "lib"
    shape_photos(lib, 40)
    real, calls = shutil.disk_usage, [0]

    def disk_usage(path: Any) -> Any:
        calls[0] += 1
        usage = real(path)
        return usage._replace(free=0) if calls[0] > 6 else usage

    monkeypatch.setattr(store_module.shutil, "disk_usage", disk_usage)
    failed = cli("index", str(lib), "--batch-size", "4", ok=False)
    assert failed.exit_code == 1
    line = one_line_error(failed.stderr)
    assert "is full" in line and "free some space" in line
    partial = store_state(cli.home)
    assert 0 < len(partial) < 40
    monkeypatch.setattr(store_module.shutil, "disk_usage", real)
    cli.json("index", str(lib))
    assert_same_state(store_state(cli.home), clean_state(cli, "clean", lib))


def test_real_full_disk(tmp_path: Path, small_disk: Path, cli: Any) -> None:
    """The engine writes through mmap, so a full disk would be a SIGBUS: the index stops before that."""
    from mediasearch.store.base import MIN_FREE_BYTES

    lib = tmp_path / "lib"
    shape_photos(lib / "a", 20)
    home = small_disk / "home"
    type(cli)(home).json("index", str(lib))
    shape_photos(lib / "b", 40, seed=1)
    filler = small_disk / "filler"
    with open(filler, "wb") as fh:  # leave a little more than the reserve: the first writes fit
        fh.truncate(max(0, shutil.disk_usage(small_disk).free - MIN_FREE_BYTES - (256 << 10)))
        os.posix_fallocate(fh.fileno(), 0, os.fstat(fh.fileno()).st_size)
    full = run_cli(home, "index", str(lib), "--json")
    assert full.returncode == 1, (full.returncode, full.stderr)  # not -SIGBUS
    assert "is full" in one_line_error(full.stderr)
    status = run_cli(home, "status", "--json")  # readable on the full disk
    assert status.returncode == 0, status.stderr
    filler.unlink()
    type(cli)(home).json("index", str(lib))
    assert_same_state(store_state(home), clean_state(cli, "clean", lib))


# -- concurrency -----------------------------------------------------------------------------------

IN_USE = "is in use by another mediasearch process (pid {pid}"


def test_two_index_runs_on_one_home_at_once(tmp_path: Path, killable: tuple[Path, Any, tuple[float, float]]) -> None:
    """The second waits for the store or says who holds it; either way nothing is lost or doubled."""
    lib, want, _ = killable
    home = tmp_path / "home"
    runs = [Timed(home, lib), Timed(home, lib)]
    results = [run.proc.communicate(timeout=300) for run in runs]
    codes = sorted(run.proc.returncode for run in runs)
    assert codes in ([0, 0], [0, 1]), [err for _, err in results]
    for run, (_, err) in zip(runs, results, strict=True):
        if run.proc.returncode == 1:
            other = next(r for r in runs if r is not run)
            line = one_line_error(err)
            assert IN_USE.format(pid=other.proc.pid) in line and "index" in line, line
    assert_same_state(store_state(home), want)


def test_commands_while_another_process_holds_the_store(tmp_path: Path, cli: Any) -> None:
    """A query or an index while a long index holds the store: a plain message naming the holder."""
    from mediasearch.store.collections import active_collection, open_store

    shape_photos(tmp_path / "lib", 4)
    cli.json("index", str(tmp_path / "lib"))
    collection = active_collection(home=cli.home)
    assert collection is not None
    with open_store(home=cli.home, collection=collection, dim=None, create=False):
        children = [
            subprocess.Popen(cli_command(cli.home, *args), env=cli_env(), stderr=subprocess.PIPE, text=True)
            for args in (["query", "a red circle"], ["index", str(tmp_path / "lib")])
        ]
        for child in children:
            _, err = child.communicate(timeout=120)
            assert child.returncode == 1
            assert IN_USE.format(pid=os.getpid()) in one_line_error(err)


def test_daemon_and_cli_at_once(tmp_path: Path, killable: tuple[Path, Any, tuple[float, float]]) -> None:
    """While the daemon indexes: the CLI's index and query go through it, and nobody else opens the store."""
    from daemon_helpers import Daemon

    from mediasearch.errors import ModelMismatchError, StoreLockedError
    from mediasearch.library.client import find_daemon
    from mediasearch.search.query import Query, Term
    from mediasearch.store.collections import active_collection, open_store

    lib, want, _ = killable
    extra = shape_photos(tmp_path / "extra", 6, seed=7)
    home = tmp_path / "home"
    daemon = Daemon(home, str(lib), "--rescan-every", "off").wait_ready()
    try:
        children = [
            subprocess.Popen(
                cli_command(home, *a), env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            for a in (["index", str(tmp_path / "extra"), "--json"], ["query", "a red circle", "--json"])
        ]
        collection = wait_until(lambda: active_collection(home=home), 60, "the index exists")
        with pytest.raises(StoreLockedError, match=f"pid {daemon.proc.pid}"):
            open_store(home=home, collection=collection, dim=None, create=False, wait_s=0.5)
        outputs = [child.communicate(timeout=300) for child in children]
        assert [c.returncode for c in children] == [0, 0], [err for _, err in outputs]
        assert json.loads(outputs[0][0])["added"] == len(extra)
        client = find_daemon(home)
        assert client is not None
        with pytest.raises(ModelMismatchError, match="not ViT-B-32"):
            client.query(Query(terms=(Term("text", "a red circle"),)), model="ViT-B-32")
        daemon.wait_idle(timeout=120)
        daemon.wait_enriched()
    finally:
        assert daemon.stop() == 0
    state = store_state(home)
    assert len(state) == len(want) + len(extra)
    assert_same_state({k: v for k, v in state.items() if k in want}, want)


def test_model_mismatch_is_one_clear_line(tmp_path: Path, cli: Any) -> None:
    shape_photos(tmp_path / "lib", 2)
    cli.json("index", str(tmp_path / "lib"))
    result = cli("query", "a red circle", model="ViT-B-32", ok=False)
    assert result.exit_code == 1
    line = one_line_error(result.stderr)
    assert "built with demo" in line and "ViT-B-32" in line and "drop --model" in line
