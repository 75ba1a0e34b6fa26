"""The atomic-write helper every state file goes through (temporary file, fsync, rename, fsync of the folder)."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from mediasearch import fsutil


def test_atomic_write_replaces_the_content_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_text("old", encoding="utf-8")
    fsutil.atomic_write(target, '{"new": 1}')
    assert target.read_text(encoding="utf-8") == '{"new": 1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_a_failed_writer_leaves_the_old_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), fsutil.atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed half-way")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_the_file_is_flushed_before_the_rename_and_the_folder_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What makes the README's power-cut claim for state files true: data, then the rename, on disk."""
    target = tmp_path / "daemon.json"
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        events.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    fsutil.atomic_write(target, b"x")
    assert events == ["fsync file", "rename", "fsync dir"]


def test_mode_is_exact_for_secrets_and_follows_the_umask_otherwise(tmp_path: Path) -> None:
    fsutil.atomic_write(tmp_path / "secret", "token", mode=0o600)
    assert stat.S_IMODE((tmp_path / "secret").stat().st_mode) == 0o600
    shared, private = tmp_path / "shared", tmp_path / "private"
    shared.mkdir()
    shared.chmod(0o755)
    private.mkdir()
    private.chmod(0o700)
    old = os.umask(0o027)
    try:
        fsutil.atomic_write(shared / "plain", "x")
        fsutil.atomic_write(private / "plain", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((shared / "plain").stat().st_mode) == 0o640
    assert stat.S_IMODE((private / "plain").stat().st_mode) == 0o600  # a private folder's files stay private


def test_a_home_others_could_enter_is_made_private(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "store").mkdir(parents=True)
    for path, mode in ((home, 0o755), (home / "store", 0o755)):
        path.chmod(mode)
    (home / "store" / "meta.json").write_text("{}")
    (home / "store" / "meta.json").chmod(0o644)
    assert fsutil.make_private(home) is True
    assert [stat.S_IMODE(p.stat().st_mode) for p in (home, home / "store", home / "store" / "meta.json")] == [
        0o700, 0o700, 0o600,
    ]
    assert fsutil.make_private(home) is False  # already private: nothing to say
    fresh = tmp_path / "new" / "home"
    assert fsutil.make_private(fresh) is False and stat.S_IMODE(fresh.stat().st_mode) == 0o700


def test_concurrent_writers_never_share_a_temporary_name(tmp_path: Path) -> None:
    """A fixed temporary name lets two writers rename each other's half-written file into place."""
    target = tmp_path / "state.json"
    payloads = [str(n) * 20000 for n in range(8)]
    errors: list[BaseException] = []

    def write(text: str) -> None:
        try:
            for _ in range(20):
                fsutil.atomic_write(target, text)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert target.read_text(encoding="utf-8") in payloads
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
