"""discover: walking folders, path forms for odd names, root status, fingerprints."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mediasearch.errors import MediaError
from mediasearch.media.decode import load_image
from mediasearch.media.discover import (
    IMAGE_EXTS,
    VIDEO_EXTS,
    FileEntry,
    ancestor_dirs,
    discover,
    display_path,
    fingerprint,
    media_kind,
    path_from_payload,
    path_payload,
    root_status,
)

NON_UTF8_NAME = os.fsdecode(b"caf\xe9-\xff.jpg")  # Latin-1 bytes: not valid UTF-8


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def found(roots: list[Path] | list[str], **kwargs: object) -> list[str]:
    return [e.path for e in discover(roots, **kwargs)]  # type: ignore[arg-type]


def collect_errors() -> tuple[list[tuple[str, str]], Callable[[str, str], None]]:
    errors: list[tuple[str, str]] = []
    return errors, lambda path, reason: errors.append((path, reason))


# ----------------------------------------------------------------------------------------- walking


def test_finds_media_by_extension_any_case_with_stat_fields(tmp_path: Path) -> None:
    touch(tmp_path / "b.JPG")
    touch(tmp_path / "a.png", b"12345")
    touch(tmp_path / "sub" / "clip.Mp4")
    touch(tmp_path / "notes.txt")
    touch(tmp_path / "noext")
    (tmp_path / "folder.jpg").mkdir()  # a directory named like a photo is walked, not listed

    entries = list(discover([tmp_path]))

    assert [Path(e.path).name for e in entries] == ["a.png", "b.JPG", "clip.Mp4"]
    first = entries[0]
    st = os.stat(first.path)
    assert first == FileEntry(str(tmp_path / "a.png"), str(tmp_path), "image", 5, st.st_mtime)
    assert [e.kind for e in entries] == ["image", "image", "video"]
    assert all(os.path.isabs(e.path) for e in entries)


def test_extension_sets_and_media_kind() -> None:
    assert {"jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"} <= IMAGE_EXTS
    assert {"mp4", "mov", "m4v", "mkv", "webm", "avi"} <= VIDEO_EXTS
    assert media_kind("/x/Y.TIFF") == "image"
    assert media_kind("movie.MKV") == "video"
    assert media_kind("archive.tar.gz") is None
    assert media_kind(".jpg") is None  # a hidden file without an extension, not a jpg


def test_order_is_sorted_depth_first_and_deterministic(tmp_path: Path) -> None:
    for name in ["z.jpg", "a/2.jpg", "a/1.jpg", "m.png", "a/b/0.gif", "b.webp"]:
        touch(tmp_path / name)
    expected = [str(tmp_path / n) for n in ["a/1.jpg", "a/2.jpg", "a/b/0.gif", "b.webp", "m.png", "z.jpg"]]
    assert found([tmp_path]) == expected
    assert found([tmp_path]) == expected


def test_relative_root_gives_absolute_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    touch(tmp_path / "pics" / "a.jpg")
    monkeypatch.chdir(tmp_path)
    [entry] = discover(["pics"])
    assert entry.path == str(tmp_path / "pics" / "a.jpg")
    assert entry.root == str(tmp_path / "pics")


def test_hidden_files_and_folders_are_skipped_by_default(tmp_path: Path) -> None:
    touch(tmp_path / "seen.jpg")
    touch(tmp_path / ".hidden.jpg")
    touch(tmp_path / ".cache" / "thumb.jpg")
    touch(tmp_path / "sub" / ".trash" / "old.jpg")

    assert found([tmp_path]) == [str(tmp_path / "seen.jpg")]
    assert len(found([tmp_path], include_hidden=True)) == 4


def test_a_hidden_root_itself_is_walked(tmp_path: Path) -> None:
    touch(tmp_path / ".photos" / "a.jpg")
    assert found([tmp_path / ".photos"]) == [str(tmp_path / ".photos" / "a.jpg")]


def test_symlinks_are_followed_and_loops_terminate(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    touch(outside / "linked.jpg")
    root = tmp_path / "root"
    touch(root / "a" / "photo.jpg")
    (root / "a" / "loop").symlink_to(root)  # points back at an ancestor
    (root / "a" / "self").symlink_to(".")
    (root / "ext").symlink_to(outside)
    (root / "file-link.jpg").symlink_to(outside / "linked.jpg")

    paths = found([root])

    assert paths == [
        str(root / "a" / "photo.jpg"),
        str(root / "ext" / "linked.jpg"),
        str(root / "file-link.jpg"),
    ]


def test_two_links_to_one_folder_walk_it_once(tmp_path: Path) -> None:
    touch(tmp_path / "real" / "x.jpg")
    (tmp_path / "link1").symlink_to(tmp_path / "real")
    assert found([tmp_path]) == [str(tmp_path / "link1" / "x.jpg")]


def test_broken_symlink_is_reported_not_raised(tmp_path: Path) -> None:
    (tmp_path / "gone.jpg").symlink_to(tmp_path / "missing.jpg")
    touch(tmp_path / "ok.jpg")
    errors, on_error = collect_errors()
    assert found([tmp_path], on_error=on_error) == [str(tmp_path / "ok.jpg")]
    assert errors == [(str(tmp_path / "gone.jpg"), "broken symbolic link")]


def test_special_files_named_like_media_are_skipped(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.jpg")  # opening it would block a decoder forever
    touch(tmp_path / "a.jpg")
    assert found([tmp_path]) == [str(tmp_path / "a.jpg")]


def test_unreadable_folder_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    touch(tmp_path / "locked" / "secret.jpg")
    touch(tmp_path / "open" / "a.jpg")
    locked = str(tmp_path / "locked")
    real_scandir = os.scandir

    def scandir(path: str) -> object:  # tests may run as root, where chmod 000 does not lock
        if path == locked:
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    errors, on_error = collect_errors()
    assert found([tmp_path], on_error=on_error) == [str(tmp_path / "open" / "a.jpg")]
    assert errors == [(locked, "permission denied")]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every folder")
def test_unreadable_folder_for_real(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    touch(locked / "secret.jpg")
    locked.chmod(0)
    try:
        errors, on_error = collect_errors()
        assert found([tmp_path], on_error=on_error) == []
        assert errors == [(str(locked), "permission denied")]
    finally:
        locked.chmod(0o755)


def test_missing_root_is_reported_and_others_still_walked(tmp_path: Path) -> None:
    touch(tmp_path / "here" / "a.jpg")
    errors, on_error = collect_errors()
    paths = found([tmp_path / "gone", tmp_path / "here"], on_error=on_error)
    assert paths == [str(tmp_path / "here" / "a.jpg")]
    assert errors == [(str(tmp_path / "gone"), "no such file or directory")]


def test_a_file_can_be_a_root(tmp_path: Path) -> None:
    photo = touch(tmp_path / "one.jpg")
    touch(tmp_path / "notes.txt")
    assert found([photo]) == [str(photo)]
    assert found([tmp_path / "notes.txt"]) == []


def test_nested_roots_yield_each_file_once_under_the_outer_root(tmp_path: Path) -> None:
    touch(tmp_path / "sub" / "a.jpg")
    entries = list(discover([tmp_path / "sub", tmp_path, tmp_path]))
    assert [(e.path, e.root) for e in entries] == [(str(tmp_path / "sub" / "a.jpg"), str(tmp_path))]


def test_non_utf8_name_is_found_and_opens(tmp_path: Path, make_image: Callable[..., Path]) -> None:
    make_image(tmp_path / os.fsdecode(b"dir-\xe9") / NON_UTF8_NAME)
    [entry] = discover([tmp_path])
    assert os.fsencode(entry.path).endswith(b"dir-\xe9/caf\xe9-\xff.jpg")
    image, _ = load_image(entry.path)
    assert image.size == (64, 48)


def test_discover_is_fast(tmp_path: Path) -> None:
    # 2,000 files keep the test quick; the 10,000-file figure lives in the benchmark notes.
    for d in range(20):
        folder = tmp_path / f"d{d:03}"
        folder.mkdir()
        for name in [*(f"{i:03}.jpg" for i in range(100)), "readme.txt"]:
            os.close(os.open(folder / name, os.O_CREAT | os.O_WRONLY, 0o644))
    start = time.perf_counter()
    count = sum(1 for _ in discover([tmp_path]))
    elapsed = time.perf_counter() - start
    assert count == 2_000
    assert elapsed < 0.5, f"discover took {elapsed:.2f} s for 2,000 files"


# ------------------------------------------------------------------------------------- root status


def test_root_status(tmp_path: Path) -> None:
    assert root_status(tmp_path / "nope") == "missing"
    empty = tmp_path / "mnt"
    empty.mkdir()
    assert root_status(empty) == "empty"  # what an unmounted mount point looks like
    touch(empty / "a.jpg")
    assert root_status(str(empty)) == "ok"
    assert root_status(empty / "a.jpg") == "ok"


# ----------------------------------------------------------------------------------------- display


def test_plain_path_payload_is_just_the_path() -> None:
    path = "/photos/2024/été 🌞 ‍👩/IMG 1.jpg"
    assert display_path(path) == path
    assert path_payload(path) == {"path": path}
    assert path_from_payload(path_payload(path)) == path


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("a\nb.jpg", "a\\nb.jpg"),
        ("bell\x07\x1b[31m.jpg", "bell\\x07\\x1b[31m.jpg"),
        ("evil\u202egpj.exe", "evil\\u202egpj.exe"),
        ("c1\x9b.jpg", "c1\\x9b.jpg"),
        (NON_UTF8_NAME, "caf\ufffd-\ufffd.jpg"),
    ],
)
def test_display_path_escapes_and_payload_round_trips(name: str, shown: str) -> None:
    path = "/p/" + name
    assert display_path(path) == "/p/" + shown
    payload = path_payload(path)
    assert payload["path"] == "/p/" + shown
    json.dumps(payload, ensure_ascii=False).encode("utf-8")  # storable as UTF-8 JSON
    assert path_from_payload(json.loads(json.dumps(payload))) == path


def test_control_char_and_non_utf8_names_open_after_round_trip(tmp_path: Path) -> None:
    for name in [NON_UTF8_NAME, "line\nbreak.jpg", "tab\there.jpg"]:
        touch(tmp_path / name, name.encode("utf-8", "surrogateescape"))
    for entry in discover([tmp_path]):
        payload = json.loads(json.dumps(path_payload(entry.path)))
        assert "path_raw" in payload
        assert "\n" not in payload["path"] and "\t" not in payload["path"]
        with open(path_from_payload(payload), "rb") as f:
            assert f.read() == os.fsencode(Path(entry.path).name)


def test_ancestor_dirs() -> None:
    assert ancestor_dirs("/a/b/c.jpg") == ["/a/b", "/a", "/"]
    assert ancestor_dirs("/a/b/") == ["/a", "/"]
    assert ancestor_dirs("/" + NON_UTF8_NAME + "/x.jpg") == ["/caf\ufffd-\ufffd.jpg", "/"]


# -------------------------------------------------------------------------------------- fingerprint


def test_fingerprint_depends_on_content_not_path(tmp_path: Path) -> None:
    data = os.urandom(1000)
    a = touch(tmp_path / "a.jpg", data)
    b = touch(tmp_path / "moved" / "b.jpg", data)
    c = touch(tmp_path / "c.jpg", data[:-1] + bytes([data[-1] ^ 1]))
    fa, fb, fc = (fingerprint(str(p), p.stat().st_size) for p in (a, b, c))
    assert fa == fb
    assert fa != fc
    assert len(fa) == 32 and int(fa, 16) >= 0


def test_fingerprint_of_large_file_reads_head_and_tail(tmp_path: Path) -> None:
    data = bytearray(os.urandom(1_000_000))
    path = touch(tmp_path / "big.mp4", bytes(data))
    base = fingerprint(str(path), len(data))
    for offset, changes in [(10, True), (len(data) - 10, True), (500_000, False)]:
        changed = bytearray(data)
        changed[offset] ^= 0xFF
        path.write_bytes(bytes(changed))
        assert (fingerprint(str(path), len(data)) != base) is changes, offset
    path.write_bytes(bytes(data) + b"x")
    assert fingerprint(str(path), len(data) + 1) != base


def test_fingerprint_of_missing_file_is_a_media_error(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="cannot read file: no such file or directory"):
        fingerprint(str(tmp_path / "gone.jpg"), 10)
