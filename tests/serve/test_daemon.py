"""The daemon: watched folders, the warm query service, the HTTP API, clean shutdown.

The end-to-end tests start `mediasearch serve` as a real process on a temporary home (one shared
daemon for most of them), change files under its root and poll the HTTP API; the unit tests at the
end check the pieces (event coalescing, the client's port file, the API's refusals) in-process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from daemon_helpers import OTHERS, Daemon, _cli, photos, wait_for

from mediasearch.library.client import DaemonInfo, find_daemon, port_file, write_port_file


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, Path]]:
    """One daemon watching ``lib`` (5 photos of other shapes to start with), shared by the tests below."""
    base = tmp_path_factory.mktemp("served")
    lib = base / "lib"
    photos(lib / "base", OTHERS, seed=1)
    daemon = Daemon(base / "home", str(lib), "--debounce", "1", "--rescan-every", "off")
    try:
        daemon.wait_ready().wait_idle()
        yield daemon, lib
    finally:
        daemon.stop()


# -- watching ------------------------------------------------------------------------------------


def test_copied_images_are_findable_within_10s(served: tuple[Daemon, Path], tmp_path: Path) -> None:
    daemon, lib = served
    staged = photos(tmp_path / "staging", [("red", "circle")] * 10, seed=2)
    (lib / "new").mkdir()
    started = time.monotonic()
    for path in staged:
        shutil.copy(path, lib / "new" / path.name)
    expected = {str(lib / "new" / p.name) for p in staged}

    def found() -> bool:
        hits = daemon.call("POST", "/query", {"text": "a red circle", "limit": 10})
        return {h["path"] for h in hits} == expected

    wait_for(found, 10 - (time.monotonic() - started), "the 10 red circles are the top hits for 'a red circle'")
    # The files are searchable as each is written; their log lines come when the run ends.
    wait_for(lambda: len(daemon.log_lines(str(lib / "new"))) == 10, 60, "a log line per file indexed")


def test_deletions_and_moved_folder_are_reflected_within_10s(served: tuple[Daemon, Path], tmp_path: Path) -> None:
    daemon, lib = served
    root = lib / "t2"
    loose = photos(root / "loose", OTHERS * 2, seed=3)
    kept = photos(root / "album", OTHERS, seed=4)
    wait_for(lambda: len(daemon.listing(root)) == 15, 20, "the 15 photos are indexed")
    daemon.wait_idle()

    started = time.monotonic()
    for path in loose[:5]:
        path.unlink()
    (root / "archive").mkdir()
    shutil.move(root / "album", root / "archive" / "album")
    expected = {str(p) for p in loose[5:]} | {str(root / "archive" / "album" / p.name) for p in kept}
    wait_for(lambda: daemon.listing(root) == expected, 10 - (time.monotonic() - started), "deletions and the move")
    wait_for(lambda: len(daemon.log_lines(" moved ")) >= 5, 5, "the move is logged as moves")
    assert len(daemon.log_lines("removed " + str(root / "loose"))) == 5


def test_a_file_written_slowly_is_indexed_once(served: tuple[Daemon, Path], tmp_path: Path) -> None:
    daemon, lib = served
    (source,) = photos(tmp_path / "src", [("orange", "triangle")], seed=5)
    data = source.read_bytes()
    target = lib / "t3" / "slow.png"
    target.parent.mkdir()
    with open(target, "wb") as fh:  # 8 chunks over ~2 s: longer than the 1 s debounce in total
        for start in range(0, len(data), len(data) // 8 + 1):
            fh.write(data[start : start + len(data) // 8 + 1])
            fh.flush()
            time.sleep(0.25)
    wait_for(lambda: daemon.listing(target.parent) == {str(target)}, 10, "the slow file is indexed")
    time.sleep(1.5)  # a second, late indexing would show up by now
    daemon.wait_idle()
    assert [line.split()[3:] for line in daemon.log_lines("slow.png")] == [["indexed", str(target)]]


# -- the warm query service ----------------------------------------------------------------------


def test_cli_goes_through_the_daemon_with_the_same_json(served: tuple[Daemon, Path]) -> None:
    daemon, _ = served
    daemon.wait_idle()
    out = _cli(daemon.home, "query", "a red circle", "--limit", "5", "--json")
    assert out.returncode == 0, out.stderr  # the daemon holds the store: opening it would fail
    assert json.loads(out.stdout) == daemon.call("POST", "/query", {"text": "a red circle", "limit": 5})
    status = _cli(daemon.home, "status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["files"] == daemon.status()["files"]
    owner = json.loads(next((daemon.home / "store").glob("*.owner")).read_text())
    assert owner["pid"] == daemon.proc.pid


def test_index_signal_switches_do_not_pass_silently_through_the_daemon(served: tuple[Daemon, Path]) -> None:
    """``index --no-ocr`` with a daemon serving the home: the daemon keeps the settings it started with,
    so the switch is refused in one line that says what to do, and nothing is indexed or dropped."""
    daemon, lib = served
    daemon.wait_idle()
    before = daemon.status()
    out = _cli(daemon.home, "index", str(lib), "--no-ocr", "--faces")
    assert out.returncode == 1 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and f"pid {daemon.proc.pid}" in lines[0], out.stderr
    assert "--no-ocr --faces" in lines[0] and "ocr = false, faces = true" in lines[0]
    assert str(daemon.home / "config.toml") in lines[0]
    after = daemon.status()
    assert after["files"] == before["files"] and after["enrichers"] == before["enrichers"]
    plain = _cli(daemon.home, "index", str(lib), "--json")  # without a switch it goes through
    assert plain.returncode == 0, plain.stderr


def test_thumbnails_only_for_indexed_files(served: tuple[Daemon, Path], tmp_path: Path) -> None:
    daemon, lib = served
    assert daemon.client is not None
    info = daemon.client.info
    indexed = sorted(daemon.listing(lib / "base"))[0]
    (outside,) = photos(lib.parent, [("red", "circle")], seed=6)  # a real image next to the root

    def fetch(path: str, token: str | None = info.token) -> int:
        url = f"{info.url}/thumbnail?size=64&path={urllib.parse.quote(path)}"
        request = urllib.request.Request(url, headers={"X-Mediasearch-Token": token} if token else {})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                assert response.read(2) == b"\xff\xd8"
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    assert fetch(indexed) == 200
    assert fetch(str(lib / ".." / outside.name)) == 404
    assert fetch(str(lib / "base" / ".." / ".." / ".." / ".." / "etc" / "passwd")) == 404
    assert fetch("/etc/passwd") == 404
    assert fetch(str(port_file(daemon.home))) == 404
    assert fetch(os.path.relpath(indexed)) == 404
    assert fetch(indexed, token=None) == 401
    assert fetch(indexed, token="not-the-token") == 401


def test_non_loopback_binding_needs_a_token(tmp_path: Path) -> None:
    (tmp_path / "short").write_text("short\n")
    for extra in ([], ["--token-file", str(tmp_path / "short")]):
        out = _cli(tmp_path / "home", "serve", "--host", "0.0.0.0", *extra, timeout=60)
        assert out.returncode == 1
        assert "token" in out.stderr and "Traceback" not in out.stderr
    assert not port_file(tmp_path / "home").exists()


# -- shutdown ------------------------------------------------------------------------------------


def stored_paths(home: Path) -> list[str]:
    """The path of every point in the home's index (opened directly: no daemon runs)."""
    from mediasearch.store.collections import active_collection, open_store

    name = active_collection(home=home)
    assert name is not None
    with open_store(home=home, collection=name, dim=None, create=False) as store:
        return [r.payload["path"] for r in store.scroll(fields=("path",))]


def noise_photos(folder: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    from PIL import Image

    for i in range(n):
        pixels = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"noise_{i:04d}.jpg", quality=70)


def test_sigterm_mid_index_then_restart_completes_without_duplicates(tmp_path: Path) -> None:
    lib, home, total = tmp_path / "big", tmp_path / "home", 1500
    noise_photos(lib, total)
    first = Daemon(home, str(lib), "--rescan-every", "off").wait_ready()
    wait_for(lambda: first.status()["files"] > 0, 60, "indexing has begun")
    assert first.stop() == 0
    assert not port_file(home).exists() and first.log_lines("stopped")
    partial = stored_paths(home)
    assert 0 < len(partial) < total and len(set(partial)) == len(partial)

    second = Daemon(home, "--rescan-every", "off").wait_ready()  # the roots are remembered
    try:
        second.wait_idle(timeout=120)
        assert second.status()["files"] == total
    finally:
        assert second.stop() == 0
    final = stored_paths(home)
    assert len(final) == len(set(final)) == total


# -- the pieces, in-process ----------------------------------------------------------------------


def test_coalescer_debounces_and_scopes_events(tmp_path: Path) -> None:
    from mediasearch.serve.watcher import Coalescer

    now = [0.0]
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "x.jpg").write_bytes(b"x")
    (root / "c").mkdir()
    home = root / "home"
    c = Coalescer([str(root)], 1.0, ignore=[str(home)], clock=lambda: now[0])
    c.add("modified", str(root / "a" / "b" / "x.jpg"))
    c.add("created", str(root / "a" / "notes.txt"))  # not media
    c.add("modified", str(home / "store" / "x.jpg"))  # our own writes
    now[0] = 0.5
    c.add("closed", str(root / "a" / "b" / "x.jpg"))
    assert c.ready() == [] and c.pending() == 1
    now[0] = 1.6
    os.utime(root / "a" / "b" / "x.jpg", (time.time() - 60, time.time() - 60))
    assert c.ready() == [str(root / "a" / "b")]
    c.add("moved", str(root / "a" / "b" / "x.jpg"), str(root / "c" / "x.jpg"))
    c.add("deleted", str(root / "gone" / "y.jpg"), is_dir=False)  # its folder is gone: the root
    c.add("created", str(root / "a" / "b" / "new"), is_dir=True)
    now[0] = 5.0
    assert c.ready() == [str(root)]


def test_coalescer_waits_for_a_file_still_changing(tmp_path: Path) -> None:
    from mediasearch.serve.watcher import Coalescer

    now = [0.0]
    (tmp_path / "f.png").write_bytes(b"x")  # mtime: now, as if a writer were still at it
    c = Coalescer([str(tmp_path)], 30.0, clock=lambda: now[0])
    c.add("modified", str(tmp_path / "f.png"))
    now[0] = 31.0
    assert c.ready() == [] and c.pending() == 1


def test_mount_type_and_network_detection(tmp_path: Path) -> None:
    from mediasearch.serve.watcher import is_network_fs, mount_fstype

    mounts = tmp_path / "mounts"
    mounts.write_text(f"/dev/sda1 / ext4 rw 0 0\nserver:/x {tmp_path} nfs4 rw 0 0\n")
    assert mount_fstype(str(tmp_path / "a" / "b"), str(mounts)) == "nfs4"
    assert mount_fstype("/usr", str(mounts)) == "ext4"
    assert is_network_fs("nfs4") and is_network_fs("fuse.sshfs") and not is_network_fs("ext4")


def test_intervals_and_binding_rules() -> None:
    from mediasearch.errors import ConfigError
    from mediasearch.serve.options import check_binding, parse_interval

    assert [parse_interval(t) for t in ("90", "30s", "15m", "6h", "1d", "off")] == [90, 30, 900, 21600, 86400, 0]
    with pytest.raises(ConfigError):
        parse_interval("soon")
    check_binding("127.0.0.1", None)
    check_binding("::1", None)
    check_binding("localhost", None)
    check_binding("0.0.0.0", "x" * 16)
    for host, token in (("0.0.0.0", None), ("192.168.1.2", ""), ("::", "short")):
        with pytest.raises(ConfigError, match="token"):
            check_binding(host, token)


def test_changes_between_snapshots() -> None:
    from mediasearch.index.plan import StoredFile
    from mediasearch.serve.changes import changes

    def sf(path: str, size: int = 1, fp: str = "f", mtime: float = 1.0) -> StoredFile:
        return StoredFile(path, size, mtime, fp, 1, "image", ids=[path])

    before = {"/a": sf("/a", fp="1"), "/b": sf("/b", fp="2"), "/c": sf("/c", fp="3")}
    after = {"/a": sf("/a", fp="1", mtime=2.0), "/d": sf("/d", fp="2"), "/e": sf("/e", fp="9")}
    assert sorted(changes(before, after)) == [
        ("indexed", "/e"),
        ("moved", "/b -> /d"),
        ("removed", "/c"),
        ("updated", "/a"),
    ]


def test_stale_port_files_are_removed(tmp_path: Path) -> None:
    import socket

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    info = DaemonInfo(int(dead.stdout), "http://127.0.0.1:9", "t", "i1", hostname=socket.gethostname())
    write_port_file(tmp_path, info)
    assert find_daemon(tmp_path) is None and not port_file(tmp_path).exists()
    with socket.socket() as sock:  # alive pid (ours), but nothing listens at the port any more
        sock.bind(("127.0.0.1", 0))
        free = sock.getsockname()[1]
    write_port_file(tmp_path, DaemonInfo(os.getpid(), f"http://127.0.0.1:{free}", "t", "i2"))
    assert oct(port_file(tmp_path).stat().st_mode & 0o777) == "0o600"
    assert find_daemon(tmp_path) is None and not port_file(tmp_path).exists()
    assert find_daemon(tmp_path / "nowhere") is None


class _StubService:
    state, message = "ready", ""

    def query(self, query: Any, model: str | None = None) -> list[dict[str, Any]]:
        from mediasearch.errors import QueryError

        if not query.terms:
            raise QueryError("a query needs some text")
        return [
            {
                "path": "/p.jpg",
                "score": 0.5,
                "calibrated": 0.7,
                "kind": "image",
                "timestamp": None,
                "start": None,
                "end": None,
                "tags": [query.terms[0].value],
            }
        ]

    def thumbnail(self, path: str, size: int, at: float | None = None) -> bytes:
        from mediasearch.serve.service import NotIndexedError

        raise NotIndexedError(f"{path} is not in the index")

    def indexed_path(self, path: str) -> str:
        from mediasearch.serve.service import NotIndexedError

        raise NotIndexedError(f"{path} is not in the index")


def test_api_token_errors_and_openapi() -> None:
    from fastapi.testclient import TestClient

    from mediasearch.serve.api import create_app

    app = create_app(_StubService(), "s3cret-token-0123")  # type: ignore[arg-type]
    client = TestClient(app, base_url="http://127.0.0.1")  # a Host the daemon answers
    assert client.get("/health").json()["state"] == "ready"
    assert "/query" in client.get("/openapi.json").json()["paths"]
    assert client.post("/query", json={"text": "a cat"}).status_code == 401
    auth = {"X-Mediasearch-Token": "s3cret-token-0123"}
    assert client.post("/query", json={"text": "a cat"}, headers=auth).json()[0]["tags"] == ["a cat"]
    bearer = {"Authorization": "Bearer s3cret-token-0123"}
    assert client.get("/query", params={"q": "dog"}, headers=bearer).status_code == 200
    empty = client.post("/query", json={}, headers=auth)
    assert empty.status_code == 422 and empty.json()["kind"] == "ValidationError"  # the schema asks for a text
    missing = client.get("/thumbnail", params={"path": "/etc/passwd", "token": "s3cret-token-0123"})
    assert missing.status_code == 404 and "not in the index" in missing.json()["error"]
