"""The plan: file arguments, nested and overlapping roots, moves across roots, files that vanish while
being planned, updates cut short between their two writes, and a no-op run that loads no model.

The model-based test of the whole invariant is test_index_invariant.py; these are its cases one by one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from fault_helpers import assert_same_state, cli_env, store_state
from hypothesis import given, settings
from hypothesis import strategies as st
from test_index import shape_photos

from mediasearch.errors import StoreError
from mediasearch.fsutil import outermost
from mediasearch.index import runner as indexer
from mediasearch.index.options import IndexOptions
from mediasearch.index.plan import StoredFile, make_plan, stored_under, under_any
from mediasearch.library import home as library
from mediasearch.media.discover import FileEntry


def clean_state(cli: Any, name: str, *paths: Path) -> Any:
    """What a clean run over ``paths`` stores, in a fresh home beside the test's."""
    other = type(cli)(cli.home.parent / name)
    other.json("index", *map(str, paths))
    return store_state(other.home)


def frames_of(home: Path) -> dict[str, list[Any]]:
    """Path → sorted frame timestamps (None for an image) of everything indexed."""
    out: dict[str, list[Any]] = {}
    for payload, _ in store_state(home).values():
        out.setdefault(payload["path"], []).append(payload.get("timestamp"))
    return {p: sorted(ts, key=lambda t: (t is not None, t or 0.0)) for p, ts in out.items()}


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths the indexer decodes from now on."""
    paths: list[str] = []
    real = indexer.decode_file
    monkeypatch.setattr(indexer, "decode_file", lambda e, *a: paths.append(e.path) or real(e, *a))
    return paths


# -- a file argument is a folder of one file -------------------------------------------------------


def test_index_of_an_unchanged_file_is_unchanged(tmp_path: Path, cli: Any, decoded: list[str]) -> None:
    photos = shape_photos(tmp_path / "lib", 3)
    cli.json("index", str(tmp_path / "lib"))
    decoded.clear()
    report = cli.json("index", str(photos[1]))
    assert (report["scanned"], report["unchanged"], report["added"], report["updated"]) == (1, 1, 0, 0)
    assert decoded == []


def test_index_of_a_changed_video_file_replaces_its_frames(
    tmp_path: Path, cli: Any, make_video: Callable[..., Path]
) -> None:
    video = make_video(tmp_path / "lib" / "clip.mp4", seconds=6.0)
    cli.json("index", str(tmp_path / "lib"))
    assert frames_of(cli.home)[str(video)] == [0.0, 2.0, 4.0]
    make_video(video, seconds=3.0, colors=[(40, 70, 220)])
    os.utime(video, (1.7e9, 1.7e9))
    report = cli.json("index", str(video))
    assert (report["updated"], report["frames"]) == (1, 2)
    assert frames_of(cli.home)[str(video)] == [0.0, 2.0]
    assert_same_state(store_state(cli.home), clean_state(cli, "clean", video))


# -- one plan across every root --------------------------------------------------------------------


def test_nested_roots_plan_each_file_once(tmp_path: Path, cli: Any, decoded: list[str]) -> None:
    lib = tmp_path / "lib"
    shape_photos(lib, 3)
    shape_photos(lib / "sub", 4, seed=1)
    report = cli.json("index", str(lib), str(lib / "sub"), str(lib / "sub" / os.listdir(lib / "sub")[0]))
    assert (report["scanned"], report["added"]) == (7, 7)
    assert len(decoded) == 7
    again = cli.json("index", str(lib / "sub"), str(lib))
    assert (again["scanned"], again["unchanged"]) == (7, 7)


def test_a_file_moved_between_roots_is_a_move(tmp_path: Path, cli: Any, decoded: list[str]) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    photos = shape_photos(one, 3)
    shape_photos(two, 2, seed=1)
    cli.json("index", str(one), str(two))
    before = frames_of(cli.home)
    decoded.clear()
    photos[0].rename(two / photos[0].name)
    report = cli.json("index", str(one), str(two))
    assert (report["moved"], report["added"], report["removed"], report["unchanged"]) == (1, 0, 0, 4)
    assert decoded == []
    assert set(frames_of(cli.home)) == (set(before) - {str(photos[0])}) | {str(two / photos[0].name)}
    assert_same_state(store_state(cli.home), clean_state(cli, "clean", one, two))


def test_a_move_with_a_new_mtime_takes_the_new_date(tmp_path: Path, cli: Any) -> None:
    """A copy-then-delete move keeps the content but not the mtime: a photo without a capture date is
    dated by its mtime, as a clean run would date it."""
    lib = tmp_path / "lib"
    photo = shape_photos(lib, 1)[0]
    cli.json("index", str(lib))
    moved = lib / "elsewhere" / photo.name
    moved.parent.mkdir()
    moved.write_bytes(photo.read_bytes())
    os.utime(moved, (1.6e9, 1.6e9))
    photo.unlink()
    assert cli.json("index", str(lib))["moved"] == 1
    assert_same_state(store_state(cli.home), clean_state(cli, "clean", lib))


# -- roots that are missing or empty ---------------------------------------------------------------


def test_a_missing_root_beside_a_present_one_keeps_its_files(tmp_path: Path, cli: Any) -> None:
    disk, other = tmp_path / "disk", tmp_path / "other"
    shape_photos(disk, 2)
    photos = shape_photos(other, 2, seed=1)
    cli.json("index", str(disk), str(other))
    disk.rename(tmp_path / "unmounted")
    photos[0].unlink()
    report = cli.json("index", str(disk), str(other))
    assert (report["removed"], report["unchanged"], report["scanned"]) == (1, 1, 1)
    assert [e["path"] for e in report["errors"]] == [str(disk)] and "missing" in report["errors"][0]["error"]
    assert sum(p.startswith(str(disk)) for p in frames_of(cli.home)) == 2


def test_an_empty_folder_inside_a_present_root_is_what_the_root_says(tmp_path: Path, cli: Any) -> None:
    lib = tmp_path / "lib"
    shape_photos(lib / "sub", 2)
    shape_photos(lib, 1, seed=1)
    cli.json("index", str(lib))
    for photo in (lib / "sub").iterdir():
        photo.unlink()
    report = cli.json("index", str(lib), str(lib / "sub"))
    assert (report["removed"], report["unchanged"], report["errors"]) == (2, 1, [])
    assert_same_state(store_state(cli.home), clean_state(cli, "clean", lib))


# -- a file that vanishes while the plan looks for moves --------------------------------------------


def entry(path: str, size: int = 100, mtime: float = 1.0, kind: Any = "image") -> FileEntry:
    return FileEntry(path, os.path.dirname(path), kind, size, mtime)


def stored(
    path: str, size: int = 100, mtime: float = 1.0, fprint: str = "f", ts: tuple[Any, ...] = (None,)
) -> StoredFile:
    sf = StoredFile(path, size, mtime, fprint, len(ts), "image" if ts == (None,) else "video")
    for i, t in enumerate(ts):
        payload = {"size": size, "mtime": mtime, "fingerprint": fprint, "frames_total": len(ts), "kind": sf.kind}
        sf.add(f"{path}#{i}", {**payload, "timestamp": t})
    return sf


def test_a_move_candidate_that_vanished_is_listed_and_the_plan_goes_on(tmp_path: Path) -> None:
    gone = str(tmp_path / "old.png")
    vanished, kept = str(tmp_path / "new.png"), str(tmp_path / "kept.png")
    Path(kept).write_bytes(b"x" * 100)
    plan = make_plan([entry(vanished), entry(kept, mtime=2.0)], {gone: stored(gone), kept: stored(kept)}, [])
    assert [(e.path, "cannot read file" in reason) for e, reason in plan.unreadable] == [(vanished, True)]
    assert [e.path for e, _ in plan.encode] == [kept]
    assert [sf.path for sf in plan.removed] == [gone] and plan.moves == []


def test_a_file_unreadable_during_move_detection_is_an_error_of_the_run(
    tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    lib = tmp_path / "lib"
    photos = shape_photos(lib, 3)
    cli.json("index", str(lib))
    photos[0].rename(lib / "renamed.jpg")
    vanishing = lib / "vanishing.jpg"
    vanishing.write_bytes(photos[1].read_bytes())
    photos[1].unlink()
    real = indexer.discover

    def discover_then_delete(*args: Any, **kwargs: Any) -> Any:
        found = list(real(*args, **kwargs))
        vanishing.unlink()  # gone between discovery and the plan's fingerprinting
        return found

    monkeypatch.setattr(indexer, "discover", discover_then_delete)
    report = cli.json("index", str(lib))
    assert (report["moved"], report["removed"], report["unchanged"], report["failed"]) == (1, 1, 1, 1)
    assert [e["path"] for e in report["errors"]] == [str(vanishing)]


# -- an update cut short between writing the new points and deleting the old -----------------------


class DeleteFails:
    """The real store, except that ``delete`` fails once (a crash between an update's two writes)."""

    def __init__(self, store: Any) -> None:
        self.store, self.armed = store, True

    def delete(self, ids: Any) -> None:
        if self.armed:
            self.armed = False
            raise StoreError("injected: the process died here")
        self.store.delete(ids)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_an_update_cut_between_its_two_writes_heals_on_the_next_run(
    tmp_path: Path, cli: Any, make_video: Callable[..., Path], demo_settings: Any
) -> None:
    lib = tmp_path / "lib"
    video = make_video(lib / "clip.mp4", seconds=6.0)
    shape_photos(lib, 2)
    cli.json("index", str(lib))
    make_video(video, seconds=3.0, colors=[(40, 170, 60)])
    os.utime(video, (1.7e9, 1.7e9))
    opened = library.open_for_index(demo_settings(cli.home))
    try:
        with pytest.raises(StoreError, match="injected"):
            indexer.index_paths([str(lib)], opened.model, DeleteFails(opened.store), IndexOptions())
        # Whichever version's point the store lists first, the file is not complete: three points, two versions.
        assert not stored_under(opened.store, [str(lib)])[str(video)].complete
    finally:
        opened.close()
    assert frames_of(cli.home)[str(video)] == [0.0, 2.0, 4.0]  # the new 0 and 2, the old 4: two versions
    cli.json("index", str(lib))
    assert frames_of(cli.home)[str(video)] == [0.0, 2.0]
    assert_same_state(store_state(cli.home), clean_state(cli, "clean", lib))


# -- the plan's invariants ---------------------------------------------------------------------------

NAMES = [f"/r/{d}f{i}.png" for d in ("", "a/", "b/") for i in range(3)]
# (size class, mtime, content class; None: the file cannot be read when fingerprinted)
on_disk = st.tuples(st.integers(1, 2), st.integers(1, 2), st.one_of(st.none(), st.integers(1, 2)))
in_store = st.tuples(st.integers(1, 2), st.integers(1, 2), st.integers(1, 2), st.booleans())


@settings(max_examples=300, deadline=None)
@given(
    disk=st.dictionaries(st.sampled_from(NAMES), on_disk, max_size=6),
    index=st.dictionaries(st.sampled_from(NAMES), in_store, max_size=6),
    protected=st.lists(st.sampled_from(["/r/a", "/r/b/f1.png"]), max_size=1),
)
def test_the_plan_accounts_for_every_file_once(
    disk: dict[str, tuple[int, int, int | None]],
    index: dict[str, tuple[int, int, int, bool]],
    protected: list[str],
) -> None:
    """Every file found is unchanged, encoded, moved or unreadable, once; every stored file not found
    (and not protected) is moved from or removed, once; unchanged means same size and mtime and all the
    points of one version; a move pairs files of the same size and fingerprint."""
    from mediasearch.errors import MediaError

    def fingerprint(path: str, size: int) -> str:  # the file system, as the plan sees it
        content = disk[path][2]
        if content is None:
            raise MediaError("cannot read file: no such file or directory")
        return f"c{content}"

    entries = [entry(p, size=100 * s, mtime=float(m)) for p, (s, m, _) in sorted(disk.items())]
    store = {}
    for p, (s, m, c, whole) in index.items():
        sf = stored(p, size=100 * s, mtime=float(m), fprint=f"c{c}")
        if not whole:  # an update cut short: a point of another version
            sf.add(f"{p}#stale", {"size": 1, "mtime": 0.0, "fingerprint": "g", "frames_total": 1, "kind": "image"})
        store[p] = sf
    with mock.patch("mediasearch.index.plan.fingerprint", fingerprint):
        plan = make_plan(entries, store, protected)
    placed = [e.path for e in plan.unchanged] + [e.path for e, _ in plan.encode]
    placed += [e.path for e, _ in plan.moves] + [e.path for e, _ in plan.unreadable]
    assert sorted(placed) == sorted(disk)
    gone = {p for p in index if p not in disk and not under_any(p, protected)}
    assert sorted([sf.path for _, sf in plan.moves] + [sf.path for sf in plan.removed]) == sorted(gone)
    for e in plan.unchanged:
        s, m, _, whole = index[e.path]
        assert (100 * s, float(m), whole) == (e.size, e.mtime, True)
    for e, old in plan.encode:
        assert old is store.get(e.path)
    for e, old in plan.moves:
        assert (e.size, fingerprint(e.path, e.size), old.complete) == (old.size, old.fingerprint, True)
    for e, _ in plan.unreadable:
        assert disk[e.path][2] is None


def test_outermost_keeps_each_root_not_inside_another() -> None:
    assert outermost(["/a/b", "/a", "/ab", "/a/b/c.png", "/a"]) == ["/a", "/ab"]


# -- plan first: nothing to encode, no model ---------------------------------------------------------

NO_OP_RUN = textwrap.dedent(
    """
    import json, sys
    import mediasearch as ms
    with ms.Library.open(home=sys.argv[1], model="demo", device="cpu") as lib:
        report = lib.index([sys.argv[2]])
    heavy = sorted(m for m in ("torch", "open_clip", "decord", "av") if m in sys.modules)
    print(json.dumps({"report": report.to_json(), "heavy": heavy}))
    """
)


def test_an_unchanged_reindex_imports_no_model(tmp_path: Path, cli: Any) -> None:
    lib = tmp_path / "lib"
    shape_photos(lib, 3)
    cli.json("index", str(lib))
    child = subprocess.run(
        [sys.executable, "-c", NO_OP_RUN, str(cli.home), str(lib)],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=120,
        check=True,
    )
    import json

    out = json.loads(child.stdout)
    assert (out["report"]["unchanged"], out["report"]["scanned"]) == (3, 3)
    assert out["heavy"] == []
