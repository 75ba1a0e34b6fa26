"""Model-based test of the index invariant (DESIGN.md "The index invariant"; issue 15).

A hypothesis state machine changes a small photo/video library on disk (add, modify, touch, rename,
move a folder, copy, delete, unmount and remount a root), runs the real CLI (`index`, `forget`, an
`index` subprocess killed with SIGKILL at a chosen store write, and one in which a file vanishes the
moment the run first opens it), and after every completed command
holds the store against:

- the invariant: after `index ROOTS...` completes, the store holds exactly the media files under the
  roots that are present and non-empty (each once, however the roots nest), each with the points a
  clean `index ROOTS...` in a fresh home writes (same frame timestamps, the same payload fields that
  describe the file, vectors within 1e-4); files outside the roots keep what earlier runs gave them;
  a missing or empty root changes nothing, nor does a disk mounted inside a root that is unmounted
  (``lib``, seen in an injected mount table while mounted). A killed run followed by the same command
  reaches it too.
- the report: `scanned` is the number of distinct media files under the roots; `unchanged`,
  `updated`, `moved`, `added`, `removed` and `frames` follow from what the model knows changed since
  the store last matched the disk (its own bookkeeping: sizes, mtimes and content hashes).
- `forget PATH` (a file or a folder) drops exactly the indexed files under PATH and says how many.

The CLI runs in-process (typer's CliRunner, the session's demo model); only the kill and vanish rules
start a real process (`python -m mediasearch`, run by a few lines that SIGKILL it at a chosen store
write, or delete a file when it is first opened).
The store is read by `dump_index` alone: when the package is restructured, re-point that function.

Two budgets: `test_index_invariant` (default suite, derandomised, about a minute on two quiet cores
when it passes; shrinking a failure takes a few minutes more) and `test_index_invariant_long`
(`-m slow`, random, longer sequences; INDEX_INVARIANT_EXAMPLES sets how many). A kill between an
update's new points and its stale deletes is reached only now and then by random sequences, so
`test_kill_between_new_points_and_stale_deletes` drives the same machine through it, and
`test_a_move_candidate_that_vanishes` through a moved file deleted while `index` compares fingerprints.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
from child_env import settings_free_env
from hypothesis import HealthCheck, Phase, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)
from typer.testing import CliRunner

from mediasearch.cli import app
from mediasearch.lab.shapes import COLOURS  # the shapes domain's colours (DESIGN.md)
from mediasearch.media import mounts as mount_table
from mediasearch.media.discover import root_status

# -- the store, read in one place ----------------------------------------------------------------

Frames = dict[Any, tuple[dict[str, Any], np.ndarray]]
"""One file's points: frame timestamp (None for an image) -> (payload, vector)."""


def dump_index(home: Path) -> dict[str, Frames]:
    """Everything the index of ``home`` holds: file path -> frame timestamp -> (payload, vector).

    THE ONLY PLACE IN THIS MODULE THAT KNOWS THE STORAGE API; re-point it when the package is
    restructured. It depends on: ``mediasearch.store.active_collection(home=...)`` (the collection
    queries use, None before any index), ``mediasearch.store.open_store(home=, collection=, dim=None,
    create=False)`` used as a context manager, and the store's ``scroll(with_vectors=True)`` yielding
    records with ``.payload`` (a dict with at least "path", "kind" and "timestamp") and ``.vector``.
    It only reads (``create=False``). Two points for the same (path, timestamp) fail here.
    """
    from mediasearch.store import active_collection, open_store

    name = active_collection(home=home)
    if name is None:
        return {}
    files: dict[str, Frames] = {}
    with open_store(home=home, collection=name, dim=None, create=False, wait_s=30) as store:
        for rec in store.scroll(with_vectors=True):
            frames = files.setdefault(rec.payload["path"], {})
            ts = rec.payload.get("timestamp")
            assert ts not in frames, f"two points for {rec.payload['path']} at {ts}"
            assert rec.vector is not None
            frames[ts] = (rec.payload, np.asarray(rec.vector, dtype=np.float32))
    return files


# Payload keys that record how a file was indexed rather than what it is: "root" is the argument the
# file was last indexed under (a file indexed as LIB/sub and then left unchanged by `index LIB` keeps
# LIB/sub). Every other key (path, dirs, kind, size, mtime, fingerprint, frames_total, width, height,
# duration, camera, date, tags, timestamp, ...) describes the file and must match a clean run.
RUN_KEYS = frozenset({"root"})
VECTOR_ATOL = 1e-4
"""How far a stored vector may be from a clean run's, beyond the store's own rounding: the embedded store
keeps float16 vectors, so two encodings whose float32 values differ in the last bits (another batch)
can land one float16 step apart (1.2e-4 for components in [0.125, 0.25)); ``vectors_match`` allows that
step on top of VECTOR_ATOL."""


def vectors_match(got: np.ndarray, want: np.ndarray) -> bool:
    """Equal within VECTOR_ATOL plus one float16 step of each component (the store's precision)."""
    step = np.spacing(np.abs(want).astype(np.float16)).astype(np.float32)
    return got.shape == want.shape and bool(np.all(np.abs(got - want) <= VECTOR_ATOL + step))


# -- the world -----------------------------------------------------------------------------------

IMAGE_EXTS = ("bmp", "png", "jpg", "webp")  # bmp: a new colour keeps the byte size (same-size edits)
MEDIA_EXTS = frozenset({*IMAGE_EXTS, "mp4"})  # everything this test writes
IMAGE_SIZES = ((32, 24), (48, 48), (64, 48))
VIDEO_SECONDS = (2.0, 3.0, 5.0)  # 1, 2 and 3 frames at the default 2 s interval
FINGERPRINT_SPAN = 128 * 1024  # files up to this size are fingerprinted whole: "same content" is exact
BASE_MTIME = 1_600_000_000  # every write and touch sets the next whole second from here: no clock races

image_looks = st.tuples(st.sampled_from(sorted(COLOURS)), st.sampled_from(IMAGE_SIZES), st.booleans())
video_looks = st.tuples(st.sampled_from(VIDEO_SECONDS), st.integers(0, len(COLOURS) - 1))


@dataclass(frozen=True)
class Seen:
    """What the model knows of a file: enough to say whether it changed or moved."""

    size: int
    mtime_ns: int
    digest: str  # of the whole content (files stay under FINGERPRINT_SPAN)


def seen(path: str) -> Seen:
    st_ = os.stat(path)
    data = Path(path).read_bytes()
    return Seen(st_.st_size, st_.st_mtime_ns, hashlib.blake2b(data, digest_size=16).hexdigest())


def covered(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def root_ok(root: str) -> bool:
    """Present and non-empty: an index may add and remove under it (a file root is a folder of one)."""
    if os.path.isfile(root):
        return True
    return os.path.isdir(root) and bool(os.listdir(root))


def media_files(roots: list[str]) -> set[str]:
    """The distinct media files under ``roots`` (hidden names skipped), by the model's own walk."""
    found: set[str] = set()
    for root in roots:
        if os.path.isfile(root):
            found.add(root)
            continue
        for folder, dirs, names in os.walk(root):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            found.update(
                os.path.join(folder, n)
                for n in names
                if not n.startswith(".") and n.rsplit(".", 1)[-1].lower() in MEDIA_EXTS
            )
    return found


def frame_key(ts: Any) -> tuple[bool, float]:
    return (ts is not None, ts or 0.0)


def store_problems(actual: dict[str, Frames], expected: dict[str, Frames], shown: Callable[[str], str]) -> list[str]:
    """How ``actual`` differs from ``expected`` (paths, frame timestamps, payloads, vectors)."""
    problems = []
    for path in sorted(set(expected) - set(actual)):
        problems.append(f"{shown(path)}: missing from the store")
    for path in sorted(set(actual) - set(expected)):
        problems.append(f"{shown(path)}: in the store, but should not be ({len(actual[path])} points)")
    for path in sorted(set(actual) & set(expected)):
        got, want = actual[path], expected[path]
        if set(got) != set(want):
            problems.append(
                f"{shown(path)}: frames at {sorted(got, key=frame_key)}, a clean run has {sorted(want, key=frame_key)}"
            )
        for ts in sorted(set(got) & set(want), key=frame_key):
            (gp, gv), (wp, wv) = got[ts], want[ts]
            keys = (set(gp) | set(wp)) - RUN_KEYS
            diff = {k: (gp.get(k), wp.get(k)) for k in sorted(keys) if gp.get(k) != wp.get(k)}
            if diff:
                problems.append(f"{shown(path)} @ {ts}: payload (store, clean run) {diff}")
            if not vectors_match(gv, wv):
                worst = float(np.max(np.abs(gv - wv))) if gv.shape == wv.shape else "shape"
                problems.append(f"{shown(path)} @ {ts}: vector differs from a clean run's (max {worst})")
    return problems


# -- the kill -9 rule's child process ------------------------------------------------------------

# `python -m mediasearch ARGS`, SIGKILLed by itself just before its store write number N (0-based)
# reaches the engine: every state between two writes is reached, reproducibly (a timer would not
# be). It hooks the Qdrant Edge engine's `EdgeShard.update` (every point write and delete of the
# embedded store goes through it), not the package, so it survives the restructuring. At exit it
# says how many writes it saw, so that a hook that no longer sees writes fails loudly.
KILL_AT_WRITE = r"""
import atexit, os, runpy, signal, sys
import qdrant_edge
limit = int(sys.argv.pop(1))
real_update = qdrant_edge.EdgeShard.update
writes = [0]
def update(shard, operation):
    if writes[0] == limit:
        os.kill(os.getpid(), signal.SIGKILL)
    writes[0] += 1
    return real_update(shard, operation)
qdrant_edge.EdgeShard.update = update
atexit.register(lambda: print(f"store writes: {writes[0]}", file=sys.stderr))
sys.argv[0] = "mediasearch"
runpy.run_module("mediasearch", run_name="__main__", alter_sys=True)
"""


# `python -m mediasearch ARGS` in which the file TARGET vanishes the first time the run opens it (to
# fingerprint it, as a move candidate or before decoding it): deleted just before the open, as if a
# user or a sync tool removed it between discovery and reading. Hooks os.open and builtins.open (the
# fingerprint and Pillow open through them), not the package. At exit it says whether the file vanished.
VANISH_AT_OPEN = r"""
import atexit, builtins, os, runpy, sys
target = sys.argv.pop(1)
fired = [False]
def vanishing(real):
    def hooked(path, *args, **kwargs):
        if not fired[0] and isinstance(path, (str, bytes, os.PathLike)) and os.fsdecode(path) == target:
            fired[0] = True
            os.unlink(target)
        return real(path, *args, **kwargs)
    return hooked
os.open = vanishing(os.open)
builtins.open = vanishing(builtins.open)
atexit.register(lambda: print(f"vanished: {int(fired[0])}", file=sys.stderr))
sys.argv[0] = "mediasearch"
runpy.run_module("mediasearch", run_name="__main__", alter_sys=True)
"""


def child_env() -> dict[str, str]:
    """The test's environment for a child CLI: this checkout's package, offline, no MEDIASEARCH_*."""
    env = settings_free_env()
    package_parent = str(Path(sys.modules["mediasearch"].__file__ or "").resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH", "")) if p)
    return env


# -- the state machine ---------------------------------------------------------------------------

TOPS = ("lib", "other")  # lib is the "disk" that gets unmounted
FOLDERS = ("lib", "lib/a", "other", "lib/b", "other/a", "lib/a/deep", "other/a/deep")
"""The folders rules name. Rules take names from fixed lists (not from the current state), so that
shrinking a sequence keeps the meaning of its later steps; a folder that does not exist is made by a
write into it, is a missing root to `index`, and makes a move a no-op. The first ones usually exist:
they are drawn half the time."""
folder_names = st.sampled_from(FOLDERS[:3]) | st.sampled_from(FOLDERS)
root_names = st.sampled_from((*FOLDERS[:3], ".")) | st.sampled_from((*FOLDERS, "."))  # ".": the whole library
NESTED = tuple(
    (outer, inner) for outer in (*FOLDERS, ".") for inner in FOLDERS if outer == "." or inner.startswith(outer + "/")
)  # ("lib", "lib/a") first
MAX_DEPTH = 4


@dataclass(frozen=True)
class FileRef:
    """A file made by a rule; the model knows where it is now (renames and folder moves follow it)."""

    n: int


@dataclass
class World:
    """What the test function hands the machine: where to work, and the conftest media factories."""

    base: Path
    make_image: Callable[..., Path]
    make_video: Callable[..., Path]
    max_files: int
    max_kills: int
    clean_runs: dict[Any, tuple[dict[str, Any], dict[str, Frames]]] = field(default_factory=dict)


def depth(rel: str) -> int:
    return rel.count("/") + 1


def strictly_under(path: str, folders: list[str]) -> bool:
    return any(path != f and covered(path, [f]) for f in folders)


class IndexInvariant(RuleBasedStateMachine):
    """The library lives in ``base/w``; ``base/w/.parking`` (hidden, never indexed) holds an unmounted lib.

    ``lib`` is a disk: the mount table this process sees (injected) lists it while it is mounted. A run
    that reads a root at or above it while it is mounted remembers it as a mount point; while it is
    unmounted, a run over a root above it keeps what is indexed under it (`forget` drops the memory).
    Runs in child processes see the real table (lib is no mount point there): they use the memory only.
    """

    files = Bundle("files")

    def __init__(self, world: World) -> None:
        super().__init__()
        self.world = world
        for name in ("w", "home", "clean"):
            shutil.rmtree(world.base / name, ignore_errors=True)
        self.top = world.base / "w"
        self.lib = str(self.top / "lib")
        self.parking = self.top / ".parking"
        self.home = world.base / "home"
        self.runner = CliRunner()
        self.clock = 0
        self.names = 0
        self.kills = 0
        self.where: dict[FileRef, str] = {}  # where each file made by a rule is now
        self.seconds: dict[FileRef, float] = {}  # each video's length
        self.unmounted: str | None = None  # "away" (the folder is gone) or "empty" (an empty mount point)
        self.pending: list[str] | None = None  # the roots of a killed `index` not yet run again
        self.indexed: dict[str, Seen] = {}  # the model's bookkeeping: what the store holds, file by file
        self.reference: dict[str, Frames] = {}  # the store as last checked
        self.lib_remembered = False  # the home remembers lib as a mount point
        self.mount_table = mock.patch.object(
            mount_table, "mount_points", lambda: [self.lib] if self.unmounted is None else []
        )
        self.mount_table.start()

    def teardown(self) -> None:
        self.mount_table.stop()
        try:
            # A killed `index` is always followed by the same command: here, if the sequence ended first
            # (hypothesis calls teardown from a `finally`: skip it when a step failed).
            if self.pending is not None and sys.exc_info()[0] is None:
                self.index_again_after_kill()
        finally:
            for name in ("w", "home", "clean"):
                shutil.rmtree(self.world.base / name, ignore_errors=True)

    # -- helpers --

    def shown(self, path: str) -> str:
        return os.path.relpath(path, self.top)

    def absolute(self, rel: str) -> str:
        return str(self.top) if rel == "." else str(self.top / rel)

    def stamp(self, path: str) -> None:
        self.clock += 1
        seconds = BASE_MTIME + 10 * self.clock
        os.utime(path, ns=(seconds * 10**9, seconds * 10**9))

    def new_path(self, folder: str, stem: str, ext: str) -> str:
        """A name never used before in this sequence. Files keep their names when they move, so a path
        is only ever held by one file; with the clock (`stamp`), a file whose size and mtime are
        unchanged really is unchanged, which the design's "not decoded again" rule relies on."""
        self.names += 1
        return os.path.join(folder, f"{stem}{self.names}.{ext}")

    def blocked(self, path: str) -> bool:
        """Under the unmounted lib: nothing is read or written there until it is mounted again."""
        return self.unmounted is not None and covered(path, [self.lib])

    def usable_folder(self, rel: str) -> str | None:
        """The folder, made if missing; None (a no-op) while it is on the unmounted lib."""
        folder = self.absolute(rel)
        if self.blocked(folder):
            note(f"(skipped: {rel} is on the unmounted lib)")
            return None
        os.makedirs(folder, exist_ok=True)
        return folder

    def present(self, ref: FileRef) -> str | None:
        path = self.where[ref]
        if not os.path.isfile(path):
            note(f"(skipped: {self.shown(path)} is not there)")
            return None
        return path

    def file_count(self) -> int:
        return len(media_files([str(self.top)]))

    def breaks_pending_root(self, path: str) -> bool:
        """Would taking ``path`` away make a root of the killed `index` missing or empty?"""
        for root in self.pending or []:
            if path == root or (os.path.dirname(path) == root and os.listdir(root) == [os.path.basename(path)]):
                note(f"(skipped: it would take the killed command's root {self.shown(root)} away)")
                return True
        return False

    def write_image(self, path: str, look: tuple[str, tuple[int, int], bool]) -> None:
        colour, size, marker = look
        self.world.make_image(Path(path), size=size, color=COLOURS[colour], marker=marker)
        self.finish_write(path)

    def write_video(self, path: str, look: tuple[float, int]) -> None:
        seconds, shift = look
        colours = list(COLOURS.values())
        colours = (colours[shift:] + colours[:shift])[:3]
        self.world.make_video(Path(path), seconds=seconds, fps=4, size=(64, 48), colors=colours, gop=4)
        self.finish_write(path)

    def finish_write(self, path: str) -> None:
        self.stamp(path)
        assert os.path.getsize(path) <= FINGERPRINT_SPAN, f"test media too large to compare by content: {path}"

    def cli(self, *args: str, home: Path | None = None) -> Any:
        opts = ["--home", str(home or self.home), "--model", "demo", "--device", "cpu"]
        result = self.runner.invoke(app, [*opts, *args, "--json"])
        assert result.exit_code == 0, f"{' '.join(args)}: exit {result.exit_code}: {result.output}{result.exception!r}"
        return json.loads(result.stdout)

    def roots_of(self, folders: list[str], files: list[FileRef]) -> list[str]:
        roots = [self.absolute(r) for r in folders] + [self.where[f] for f in files]
        return list(dict.fromkeys(roots))  # the same argument twice: once

    # -- checks --

    def clean_index(self, roots: list[str]) -> tuple[dict[str, Any], dict[str, Frames]]:
        """`index ROOTS` in a fresh home: its report and store. A clean run depends only on the roots and
        the files (paths, content, mtimes), so it is run once per such state (shrinking replays many)."""
        key = (
            tuple((r, root_ok(r), os.path.exists(r)) for r in roots),
            tuple(sorted((p, seen(p)) for p in media_files([r for r in roots if root_ok(r)]))),
        )
        if key not in self.world.clean_runs:
            clean = self.world.base / "clean"
            shutil.rmtree(clean, ignore_errors=True)
            report = self.cli("index", *roots, home=clean)
            self.world.clean_runs[key] = (report, dump_index(clean))
        return self.world.clean_runs[key]

    def protected(self, ok: list[str]) -> list[str]:
        """lib, when it is unmounted (or left empty: an empty mount point looks the same as an unmounted
        one), remembered as a mount point and inside a root read: kept as it is."""
        away = self.unmounted is not None or root_status(self.lib) != "ok"
        keep = away and self.lib_remembered and strictly_under(self.lib, ok)
        return [self.lib] if keep else []

    def check_index(
        self, roots: list[str], report: dict[str, Any], *, after_kill: bool = False, sees_mounts: bool = True
    ) -> None:
        """After a completed `index ROOTS`: the store against a clean run, the report against the model.
        ``sees_mounts``: the run saw the injected mount table (it ran in this process)."""
        ok = [r for r in roots if root_ok(r)]
        kept = self.protected(ok)
        if sees_mounts and self.unmounted is None and any(covered(self.lib, [r]) for r in ok):
            self.lib_remembered = True
        disk = {p: seen(p) for p in media_files(ok)}
        clean_report, clean = self.clean_index(roots)
        assert set(clean) == set(disk), (
            f"a clean index of {[self.shown(r) for r in roots]} holds {sorted(map(self.shown, clean))}, "
            f"the folders hold {sorted(map(self.shown, disk))}"
        )
        expected = {p: f for p, f in self.reference.items() if not covered(p, ok) or covered(p, kept)} | clean
        problems = store_problems(dump_index(self.home), expected, self.shown)
        if after_kill:
            assert not problems, "after a killed index, the same command did not reach a clean run's store:\n" + (
                "\n".join(problems)
            )
        else:
            assert not problems, "the store differs from a clean run's:\n" + "\n".join(problems)

        where = f"index {' '.join(self.shown(r) for r in roots)}"
        bad_roots = {self.shown(r) for r in [*roots, *kept] if r not in ok}
        scanned, n_files = report["scanned"], len(disk)
        assert scanned == n_files, f"{where}: scanned {scanned}, but {n_files} distinct media files are under the roots"
        for err in report["errors"]:
            assert os.path.relpath(err["path"], self.top) in bad_roots, f"{where}: unexpected error {err}"
        assert report["failed"] <= len(bad_roots), f"{where}: failed {report['failed']} ({report['errors']})"
        done = report["added"] + report["updated"] + report["moved"] + report["unchanged"]
        assert done == n_files, f"{where}: added+updated+moved+unchanged = {done} for {n_files} files: {report}"

        if not after_kill:  # the model knows what changed since the store last matched the disk
            before = {p: s for p, s in self.indexed.items() if covered(p, ok) and not covered(p, kept)}
            stayed = set(disk) & set(before)  # (not `kept`: that one, the protected mount, is used below)
            unchanged = {p for p in stayed if (disk[p].size, disk[p].mtime_ns) == (before[p].size, before[p].mtime_ns)}
            new = Counter((disk[p].size, disk[p].digest) for p in set(disk) - stayed)
            gone = Counter((before[p].size, before[p].digest) for p in set(before) - stayed)
            moved = sum((new & gone).values())
            frames_of = {p: len(f) for p, f in clean.items() if p.endswith(".mp4")}  # same content, same frames
            frames_by_print = {(disk[p].size, disk[p].digest): frames_of.get(p, 0) for p in set(disk) - stayed}
            want = {
                "unchanged": len(unchanged),
                "updated": len(stayed) - len(unchanged),
                "moved": moved,
                "added": sum(new.values()) - moved,
                "removed": sum(gone.values()) - moved,
                "frames": sum(frames_of.get(p, 0) for p in stayed - unchanged)
                + sum(frames_by_print[key] * n for key, n in (new - gone).items()),  # a moved file is not decoded
            }
            got = {k: report[k] for k in want}
            assert got["unchanged"] == want["unchanged"], f"{where}: {got}, the model expects {want}"
            assert got["moved"] == want["moved"], f"{where}: {got}, the model expects {want}"
            assert got == want, f"{where}: {got}, the model expects {want}"

        clean_counts = (clean_report["scanned"], clean_report["added"])
        assert clean_counts == (n_files, n_files), f"clean {where} in a fresh home: {clean_report}, for {n_files} files"
        self.reference = expected
        self.indexed = {p: s for p, s in self.indexed.items() if not covered(p, ok) or covered(p, kept)} | disk

    def index_in_child(self, script: str, argument: str, roots: list[str]) -> subprocess.CompletedProcess[str]:
        """`index ROOTS --json` in a child process run by ``script`` (which takes ``argument`` first)."""
        args = ["--home", str(self.home), "--model", "demo", "--device", "cpu", "index", *roots, "--json"]
        return subprocess.run(
            [sys.executable, "-c", script, argument, *args],
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    def run_index(self, roots: list[str]) -> None:
        note(f"index {' '.join(self.shown(r) for r in roots)}")
        self.check_index(roots, self.cli("index", *roots))

    # -- rules: the library --

    @initialize(
        target=files,
        images=st.lists(st.tuples(st.sampled_from(["lib", "lib/a", "other"]), image_looks), min_size=1, max_size=3),
        video_colours=st.integers(0, len(COLOURS) - 1),
    )
    def start(self, images: list[tuple[str, Any]], video_colours: int) -> Any:
        """A library (photos, a 5 s video, a nested folder), indexed once: `index lib other`."""
        refs = []
        for rel, look in images:
            folder = self.usable_folder(rel)
            assert folder is not None
            path = self.new_path(folder, "p", IMAGE_EXTS[self.names % len(IMAGE_EXTS)])
            self.write_image(path, look)
            refs.append(FileRef(self.names))
            self.where[refs[-1]] = path
        path = self.new_path(self.absolute("lib"), "v", "mp4")
        self.write_video(path, (max(VIDEO_SECONDS), video_colours))
        refs.append(FileRef(self.names))
        self.where[refs[-1]] = path
        self.seconds[refs[-1]] = max(VIDEO_SECONDS)
        os.makedirs(self.absolute("other"), exist_ok=True)
        note(f"library: {', '.join(self.shown(self.where[r]) for r in refs)}")
        self.run_index([self.absolute("lib"), self.absolute("other")])
        return multiple(*refs)

    def added(self, path: str) -> FileRef:
        ref = FileRef(self.names)
        self.where[ref] = path
        return ref

    @precondition(lambda self: self.file_count() < self.world.max_files)
    @rule(target=files, folder=folder_names, look=image_looks, ext=st.sampled_from(IMAGE_EXTS))
    def add_image(self, folder: str, look: Any, ext: str) -> Any:
        where = self.usable_folder(folder)
        if where is None:
            return multiple()
        path = self.new_path(where, "p", ext)
        self.write_image(path, look)
        note(f"add image {self.shown(path)}")
        return self.added(path)

    @precondition(lambda self: self.file_count() < self.world.max_files)
    @rule(target=files, folder=folder_names, look=video_looks)
    def add_video(self, folder: str, look: tuple[float, int]) -> Any:
        where = self.usable_folder(folder)
        if where is None:
            return multiple()
        path = self.new_path(where, "v", "mp4")
        self.write_video(path, look)
        note(f"add video {self.shown(path)} ({look[0]} s)")
        ref = self.added(path)
        self.seconds[ref] = look[0]
        return ref

    @rule(file=files, image=image_looks, video=video_looks, keep_size=st.booleans())
    def modify(self, file: FileRef, image: Any, video: tuple[float, int], keep_size: bool) -> None:
        """New content and a new mtime. ``keep_size``: an image keeps its dimensions, which for an
        (uncompressed) BMP keeps the byte size. A video gets another length (other frame timestamps)."""
        path = self.present(file)
        if path is None:
            return
        before = seen(path)
        if path.endswith(".mp4") and video[0] == self.seconds.get(file):
            video = (VIDEO_SECONDS[(VIDEO_SECONDS.index(video[0]) + 1) % len(VIDEO_SECONDS)], video[1])
            self.seconds[file] = video[0]
        elif path.endswith(".mp4"):
            self.seconds[file] = video[0]
        for shift in range(len(COLOURS)):  # the drawn look, or the next colour if that is the same picture
            if path.endswith(".mp4"):
                look: Any = (video[0], (video[1] + shift) % len(COLOURS))
                self.write_video(path, look)
            else:
                colour = sorted(COLOURS)[(sorted(COLOURS).index(image[0]) + shift) % len(COLOURS)]
                look = (colour, image[1], image[2])
                if keep_size:
                    from PIL import Image

                    with Image.open(path) as im:
                        look = (colour, im.size, image[2])
                self.write_image(path, look)
            if seen(path).digest != before.digest:
                break
        same = " (same size)" if os.path.getsize(path) == before.size else ""
        assert not (keep_size and path.endswith(".bmp")) or same, "a BMP of the same dimensions changed size"
        note(f"modify {self.shown(path)} to {look}{same}")

    @rule(file=files)
    def touch(self, file: FileRef) -> None:
        path = self.present(file)
        if path is not None:
            self.stamp(path)
            note(f"touch {self.shown(path)}")

    @rule(file=files, folder=folder_names, keep_name=st.booleans())
    def rename_file(self, file: FileRef, folder: str, keep_name: bool) -> None:
        """Rename, or move to another folder (content and mtime kept)."""
        path = self.present(file)
        if path is None or self.breaks_pending_root(path):
            return
        where = self.usable_folder(folder)
        if where is None:
            return
        target = os.path.join(where, os.path.basename(path))
        if not keep_name or os.path.exists(target):
            target = self.new_path(where, "r", path.rsplit(".", 1)[1])
        os.rename(path, target)
        self.where[file] = target
        note(f"rename {self.shown(path)} -> {self.shown(target)}")

    @precondition(lambda self: self.file_count() < self.world.max_files)
    @rule(target=files, file=files, folder=folder_names, keep_mtime=st.booleans())
    def copy_file(self, file: FileRef, folder: str, keep_mtime: bool) -> Any:
        path, where = self.present(file), self.usable_folder(folder)
        if path is None or where is None:
            return multiple()
        target = self.new_path(where, "c", path.rsplit(".", 1)[1])
        shutil.copyfile(path, target)
        if keep_mtime:
            shutil.copystat(path, target)
        else:
            self.stamp(target)
        note(f"copy {self.shown(path)} -> {self.shown(target)}" + (" (mtime kept)" if keep_mtime else ""))
        ref = self.added(target)
        if file in self.seconds:
            self.seconds[ref] = self.seconds[file]
        return ref

    @rule(file=consumes(files))
    def delete_file(self, file: FileRef) -> None:
        path = self.present(file)
        if path is not None and not self.breaks_pending_root(path):
            os.unlink(path)
            note(f"delete {self.shown(path)}")

    @precondition(lambda self: self.pending is None)
    @rule(folder=st.sampled_from([f for f in FOLDERS if f not in TOPS]), into=folder_names)
    def move_folder(self, folder: str, into: str) -> None:
        """Move a folder (not lib or other) into another one, keeping its name."""
        source, parent = self.absolute(folder), self.absolute(into)
        target = os.path.join(parent, os.path.basename(source))
        height = max((depth(self.shown(d)) for d, _, _ in os.walk(source)), default=0) - depth(folder)
        if (
            not os.path.isdir(source)
            or not os.path.isdir(parent)
            or covered(parent, [source])
            or os.path.exists(target)
            or self.blocked(source)
            or self.blocked(parent)
            or depth(into) + 1 + height > MAX_DEPTH
        ):
            note(f"(skipped: cannot move {folder} into {into})")
            return
        os.rename(source, target)
        for ref, path in self.where.items():
            if covered(path, [source]):
                self.where[ref] = target + path[len(source) :]
        note(f"move folder {folder} -> {self.shown(target)}")

    @precondition(lambda self: self.pending is None and self.unmounted is None)
    @rule(mode=st.sampled_from(["away", "empty"]))
    def unmount(self, mode: str) -> None:
        """The disk `lib` goes away: its folder vanishes, or an empty mount point stays."""
        self.parking.mkdir(exist_ok=True)
        os.rename(self.lib, self.parking / "lib")
        if mode == "empty":
            os.mkdir(self.lib)
        self.unmounted = mode
        note(f"unmount lib ({'folder gone' if mode == 'away' else 'empty mount point left'})")

    @precondition(lambda self: self.pending is None and self.unmounted is not None)
    @rule()
    def remount(self) -> None:
        if self.unmounted == "empty":
            os.rmdir(self.lib)  # still empty: nothing is written under lib while it is unmounted
        os.rename(self.parking / "lib", self.lib)
        self.unmounted = None
        note("mount lib again")

    # -- rules: the commands --

    @precondition(lambda self: self.pending is None)
    @rule(folder=root_names)
    def index(self, folder: str) -> None:
        """`index FOLDER`: a root, a sub-folder, a missing or empty one."""
        self.run_index([self.absolute(folder)])

    @precondition(lambda self: self.pending is None)
    @rule(folders=st.lists(root_names, min_size=2, max_size=3, unique=True))
    def index_several(self, folders: list[str]) -> None:
        """`index F1 F2 [F3]`: side by side, nested, missing or empty."""
        self.run_index(self.roots_of(folders, []))

    @precondition(lambda self: self.pending is None)
    @rule(pair=st.sampled_from(NESTED), inner_first=st.booleans())
    def index_nested(self, pair: tuple[str, str], inner_first: bool) -> None:
        """`index LIB LIB/sub` (or the other way round): nested roots, each file once."""
        self.run_index([self.absolute(r) for r in (reversed(pair) if inner_first else pair)])

    @precondition(lambda self: self.pending is None)
    @rule(files=st.lists(files, min_size=1, max_size=2), folders=st.lists(root_names, max_size=1))
    def index_files(self, files: list[FileRef], folders: list[str]) -> None:
        """`index FILE...` (a file argument is a folder of one file), maybe with a folder that holds them."""
        self.run_index(self.roots_of(folders, files))

    @precondition(lambda self: self.pending is not None)
    @rule()
    def index_again_after_kill(self) -> None:
        roots, self.pending = self.pending or [], None
        note(f"index {' '.join(self.shown(r) for r in roots)}  (the killed command, run again)")
        self.check_index(roots, self.cli("index", *roots), after_kill=True)

    def run_forget(self, target: str) -> None:
        note(f"forget {self.shown(target)}")
        gone = {p for p in self.indexed if covered(p, [target])}
        dropped, indexed = self.cli("forget", target)["files"], len(gone)
        expected = {p: f for p, f in self.reference.items() if p not in gone}
        problems = store_problems(dump_index(self.home), expected, self.shown)
        assert dropped == indexed, f"forget {self.shown(target)}: files {dropped}, but {indexed} indexed under it"
        assert not problems, f"after forget {self.shown(target)}:\n" + "\n".join(problems)
        self.reference = expected
        self.indexed = {p: s for p, s in self.indexed.items() if p not in gone}
        if covered(self.lib, [target]):
            self.lib_remembered = False  # forget drops the mount points at or under its target

    @precondition(lambda self: self.pending is None)
    @rule(path=root_names | files)
    def forget(self, path: str | FileRef) -> None:
        """`forget FOLDER` or `forget FILE` (indexed or not, present or not)."""
        self.run_forget(self.where[path] if isinstance(path, FileRef) else self.absolute(path))

    def out_of_step(self) -> bool:
        """Does the disk differ from what the model says the store holds (an index would write)?"""
        on_disk = media_files([str(self.top)])
        if set(self.indexed) - on_disk:
            return True
        for path in on_disk:
            st_ = os.stat(path)
            known = self.indexed.get(path)
            if known is None or (known.size, known.mtime_ns) != (st_.st_size, st_.st_mtime_ns):
                return True
        return False

    @precondition(lambda self: self.kills < self.world.max_kills and (self.pending or self.out_of_step()))
    @rule(
        at=st.integers(0, 2),  # runs here make a few writes: an upsert and a delete per changed batch
        folders=st.lists(root_names, min_size=1, max_size=2, unique=True),
        files=st.lists(files, max_size=1),
    )
    def kill_index(self, at: int, folders: list[str], files: list[FileRef]) -> None:
        """`index ROOTS` in a child process, SIGKILLed just before its store write number ``at`` (after
        a kill, the same command again). Only while something changed: a run that writes nothing has
        no moment worth killing."""
        roots = self.pending or self.roots_of(folders, files)
        self.kills += 1
        child = self.index_in_child(KILL_AT_WRITE, str(at), roots)
        where = f"index {' '.join(self.shown(r) for r in roots)}"
        if child.returncode == -signal.SIGKILL:
            note(f"{where}  (killed -9 before its store write {at})")
            self.pending = roots
            return
        assert child.returncode == 0, f"{where}: exit {child.returncode}: {child.stderr}"
        report = json.loads(child.stdout)
        writes = int(child.stderr.rsplit("store writes:", 1)[1].split()[0])
        changed = report["added"] + report["updated"] + report["moved"] + report["removed"]
        assert writes > 0 or not changed, "the kill hook saw no store write: re-point KILL_AT_WRITE"
        note(f"{where}  (in a child process, which made {writes} store writes and finished)")
        self.check_index(roots, report, after_kill=self.pending is not None, sees_mounts=False)
        self.pending = None

    @precondition(lambda self: self.pending is None)
    @rule(file=files, folders=st.lists(root_names, max_size=1))
    def vanish_during_index(self, file: FileRef, folders: list[str]) -> None:
        """`index ROOTS` (the file's folder if none drawn) in a child process in which ``file`` is deleted
        the moment the run first opens it: a move candidate or a file to encode that is gone between
        discovery and reading. The run lists it and goes on; the same command again then gives a clean
        run's store. (A file the run never opens, an unchanged one, is left alone: a plain `index`.)"""
        path = self.present(file)
        if path is None or self.breaks_pending_root(path):
            return
        roots = self.roots_of(folders, []) or [os.path.dirname(path)]
        ok = [r for r in roots if root_ok(r)]
        alone = os.listdir(os.path.dirname(path)) == [os.path.basename(path)]
        if not covered(path, ok) or (alone and os.path.dirname(path) in ok):
            note(f"(skipped: {self.shown(path)} is not under a root, or is all its root holds)")
            return  # (a root that becomes empty is another case: an unmounted disk)
        n_files = len(media_files(ok))
        child = self.index_in_child(VANISH_AT_OPEN, path, roots)
        where = f"index {' '.join(self.shown(r) for r in roots)}"
        assert child.returncode == 0, f"{where}, {self.shown(path)} vanishing: exit {child.returncode}: {child.stderr}"
        report = json.loads(child.stdout)
        if not int(child.stderr.rsplit("vanished:", 1)[1].split()[0]):
            note(f"{where}  (in a child process; {self.shown(path)} was never opened, so it stayed)")
            self.check_index(roots, report, sees_mounts=False)
            return
        note(f"{where}  (in a child process; {self.shown(path)} vanished when the run first opened it)")
        kept = self.protected(ok)
        named = set(map(self.shown, roots + kept))
        errors = [e for e in report["errors"] if os.path.relpath(e["path"], self.top) not in named]
        assert [e["path"] for e in errors] == [path], f"{where}: {self.shown(path)} vanished, errors {report['errors']}"
        assert report["scanned"] == n_files, f"{where}: scanned {report['scanned']} of {n_files} files"
        done = report["added"] + report["updated"] + report["moved"] + report["unchanged"]
        assert done == n_files - 1, f"{where}: {report} for {n_files} files, one of them vanished"
        # Every other file is as a clean run has it; the vanished one has nothing or what it had before.
        _, clean = self.clean_index(roots)
        expected = {p: f for p, f in self.reference.items() if not covered(p, ok) or covered(p, kept)} | clean
        actual = dump_index(self.home)
        if path in actual and path in self.reference:
            expected[path] = self.reference[path]
        problems = store_problems(actual, expected, self.shown)
        assert not problems, f"after {where} with {self.shown(path)} vanishing:\n" + "\n".join(problems)
        note(f"index {' '.join(self.shown(r) for r in roots)}  (again)")
        self.check_index(roots, self.cli("index", *roots), after_kill=True)


# -- the tests -----------------------------------------------------------------------------------

DEFAULT_BUDGET = settings(
    max_examples=35,
    stateful_step_count=10,  # short sequences shrink to a minimal one within hypothesis's time limit
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],  # no explain: slow here
    deadline=None,
    derandomize=True,
    database=None,
    report_multiple_bugs=False,  # shrink the first defect found only: a failing run stays a few minutes
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
LONG_BUDGET = settings(
    DEFAULT_BUDGET,
    max_examples=int(os.environ.get("INDEX_INVARIANT_EXAMPLES", "40")),  # about ten minutes of CPU at 40
    stateful_step_count=25,
    derandomize=False,
    report_multiple_bugs=True,
)


def run_machine(tmp_path: Path, make_image: Any, make_video: Any, budget: settings, **limits: int) -> None:
    world = World(tmp_path, make_image, make_video, limits.get("max_files", 8), limits.get("max_kills", 1))
    run_state_machine_as_test(lambda: IndexInvariant(world), settings=budget)


def test_index_invariant(tmp_path: Path, make_image: Any, make_video: Any, demo_model: Any) -> None:
    """The default suite's budget: 35 sequences of up to 10 steps, at most one kill -9 each."""
    run_machine(tmp_path, make_image, make_video, DEFAULT_BUDGET)


@pytest.mark.slow
def test_index_invariant_long(tmp_path: Path, make_image: Any, make_video: Any, demo_model: Any) -> None:
    """Many more and longer sequences (`-m slow`), every defect found reported."""
    run_machine(tmp_path, make_image, make_video, LONG_BUDGET, max_files=10, max_kills=2)


def test_files_under_an_empty_mount_point_stay_in_the_model(
    tmp_path: Path, make_image: Any, make_video: Any, demo_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """lib's last file deleted: lib is an empty mount point (it looks unmounted), so `index .` keeps what
    is indexed under it; once a file is back in lib, the next `index .` removes the deleted one. The
    model's record of the store once dropped lib's files at the first run, and so expected one removal
    too few at the second (a long run found it)."""
    monkeypatch.setattr(sys.modules[__name__], "note", print)
    machine = IndexInvariant(World(tmp_path, make_image, make_video, max_files=8, max_kills=1))
    try:
        refs = machine.start(images=[("other", ("blue", (32, 24), False))], video_colours=0).values
        machine.delete_file(file=refs[-1])
        machine.index(folder=".")
        assert any(p.endswith("v2.mp4") for p in dump_index(machine.home)), "the empty mount point was not kept"
        machine.add_video(folder="lib", look=(2.0, 0))
        machine.index(folder=".")
        assert not any(p.endswith("v2.mp4") for p in dump_index(machine.home))
    finally:
        machine.teardown()


def test_kill_between_new_points_and_stale_deletes(
    tmp_path: Path, make_image: Any, make_video: Any, demo_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The machine's own checks on a path random sequences reach only now and then (issue 15): videos
    shortened (their last frame becomes stale), `index` killed after it wrote the new points and before
    it deleted the stale ones, then the same command again. Whether a re-run heals a file by luck
    depends on the order of point ids; each of four videos escapes that with odds of about 2/3."""
    monkeypatch.setattr(sys.modules[__name__], "note", print)  # the rules' notes, outside hypothesis
    machine = IndexInvariant(World(tmp_path, make_image, make_video, max_files=8, max_kills=1))
    try:
        refs = machine.start(images=[("lib", ("blue", (32, 24), False))], video_colours=0).values
        videos = [r for r in refs if machine.where[r].endswith(".mp4")]
        videos += [machine.add_video("lib", (5.0, k)) for k in (1, 2, 3)]
        machine.index("lib")
        for video in videos:  # 5 s -> 3 s: frames at 0, 2 and 4 s become 0 and 2 s
            machine.modify(video, ("red", (32, 24), False), (3.0, 0), False)
        machine.kill_index(at=1, folders=["lib"], files=[])  # write 0: the new points; 1...: the deletes
        assert machine.pending, "the child was not killed between its writes"
        machine.index_again_after_kill()
    finally:
        machine.teardown()


def test_a_move_candidate_that_vanishes(
    tmp_path: Path, make_image: Any, make_video: Any, demo_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The machine's own checks on another path random sequences reach only now and then (issue 15): a
    photo moved to another folder is a move candidate (same size as a file gone from the store), and it
    vanishes when `index` opens it to compare fingerprints. The run lists it and goes on."""
    monkeypatch.setattr(sys.modules[__name__], "note", print)
    machine = IndexInvariant(World(tmp_path, make_image, make_video, max_files=8, max_kills=0))
    try:
        looks = [("lib", ("blue", (32, 24), False)), ("lib/a", ("red", (40, 30), True))]
        photo = machine.start(images=looks, video_colours=1).values[0]
        machine.rename_file(photo, "other", keep_name=True)
        before = machine.where[photo]
        machine.vanish_during_index(photo, ["."])
        assert not os.path.exists(before), "the moved photo was never opened: no move candidate was read"
    finally:
        machine.teardown()
