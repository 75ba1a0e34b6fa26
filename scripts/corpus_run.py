#!/usr/bin/env python
"""Index a folder of files we did not make (public test corpora) and report what happened; one table.

    python scripts/corpus_run.py /tmp/corpus/pillow                   # one corpus, a fresh home
    python scripts/corpus_run.py /tmp/corpus/* --timeout 900 --json   # each folder on its own
    python scripts/corpus_run.py /tmp/corpus/orientation --orientation /tmp/corpus/orientation

Each folder gets a fresh home and two runs of the real CLI in a child process
(`mediasearch --home H --model demo index DIR --json --no-ocr --no-faces`, then `status --json`), each
under a wall-clock limit. The first run reports: regular files found, indexed, failed (reasons grouped
into a few classes), skipped by extension (per extension), crashes (an exit status other than 0 and the
documented 1, a signal, or a traceback on stderr) and hangs (the limit reached). The second run, of the
unchanged folder, must load no model and open no file that failed in the first (the child records, by
an audit hook, every import of torch/open_clip and every open of a file under the folder); its wall
and CPU time are printed with `/proc/loadavg`, which says how loaded the machine was.

``--orientation DIR`` (or a glob, quoted) also decodes the EXIF orientation sets there (NAME_N.EXT: the
same picture saved with orientation N, e.g. recurser/exif-orientation-examples, Pillow's
hopper_orientation_N) with `mediasearch.media.decode.load_image`:
every decoded, oriented picture must match the set's reference (orientation 1, else the first) better
as it is than in any other of the 8 orientations, and by a mean grey difference below ``--tolerance``.

Nothing is downloaded; the folders are read only. The exit status is 1 when a crash, a hang, a wrong
orientation or a second run that decodes or loads a model was found.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

# The CLI as `python -m mediasearch` runs it; an audit hook writes (at once: the CLI may leave by
# os._exit) each heavy import and each open of a file under the folder to the file named by the env.
CHILD = """
import os, runpy, sys
_log = open(os.environ["CORPUS_RUN_LOG"], "a", buffering=1)
_root = os.environ["CORPUS_RUN_ROOT"]
_seen = set()
def _hook(event, args):
    if event == "import" and args[0] in ("torch", "open_clip") and args[0] not in _seen:
        _seen.add(args[0]); _log.write("import\\t" + args[0] + "\\n")
    elif event == "open" and isinstance(args[0], str) and args[0].startswith(_root):
        _log.write("open\\t" + args[0] + "\\n")
sys.addaudithook(_hook)
sys.argv[0] = "mediasearch"
runpy.run_module("mediasearch", run_name="__main__", alter_sys=True)
"""

# Failure reasons, grouped: the first pattern that matches the reason names its class.
CLASSES: list[tuple[str, str]] = [
    ("empty", r"empty|zero bytes|0 bytes"),
    ("truncated", r"truncat|premature|end of file|unexpected end|eof"),
    ("too large", r"too large|memory|bomb|exceeds"),
    ("not a picture (unknown format)", r"cannot identify|unknown format|not a (picture|video)|unsupported format"),
    ("no video stream / frame", r"no video|video frame|no frame"),
    ("corrupt data", r"corrupt|invalid|broken|bad |decoder error|failed"),
    ("unsupported codec or mode", r"unsupported|not supported|codec|mode|decoder"),
]


def reason_class(reason: str) -> str:
    low = reason.lower()
    for name, pattern in CLASSES:
        if re.search(pattern, low):
            return name
    return "other"


def found_files(folder: Path) -> tuple[int, int]:
    """Regular files under ``folder``: (all, hidden ones: a dot in some part of their path)."""
    total = hidden = 0
    for dirpath, _dirs, names in os.walk(folder):
        for name in names:
            path = Path(dirpath, name)
            if path.is_symlink() or not path.is_file():
                continue
            total += 1
            if any(part.startswith(".") for part in path.relative_to(folder).parts):
                hidden += 1
    return total, hidden


def run_cli(args: list[str], root: Path, timeout: float) -> dict[str, Any]:
    """One CLI run in a child: exit status, stdout JSON, stderr, wall and CPU seconds, what it imported and opened."""
    with tempfile.NamedTemporaryFile("r", suffix=".log", delete=False) as log:
        log_path = log.name
    env = dict(os.environ)
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{env['PYTHONPATH']}" if env.get("PYTHONPATH") else str(REPO)
    env.update(CORPUS_RUN_LOG=log_path, CORPUS_RUN_ROOT=str(root))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    hung = False
    try:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, *args], capture_output=True, text=True, env=env, timeout=timeout
        )
        code, out, err = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as exc:
        hung, code = True, None
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    events = Path(log_path).read_text(errors="replace").splitlines()
    os.unlink(log_path)
    try:
        report = json.loads(out) if out.strip() else None
    except json.JSONDecodeError:
        report = None
    return {
        "code": code,
        "hung": hung,
        "report": report,
        "stderr": err,
        "wall_s": wall,
        "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "imported": sorted({e.split("\t", 1)[1] for e in events if e.startswith("import\t")}),
        "opened": sorted({e.split("\t", 1)[1] for e in events if e.startswith("open\t")}),
    }


def crash_of(run: dict[str, Any]) -> str | None:
    """Why a run counts as a crash (None when it did not)."""
    if run["hung"]:
        return None
    code = run["code"]
    if code is not None and code < 0:
        return f"killed by signal {-code}"
    if code not in (0, 1):
        return f"exit status {code}"
    if "Traceback (most recent call last)" in run["stderr"]:
        return "traceback on stderr"
    if code == 0 and run["report"] is None:
        return "no JSON report"
    return None


def transforms() -> list[Any]:
    """The 8 orientations as Pillow transposes of a picture (None: as it is)."""
    from PIL import Image

    t = Image.Transpose
    turns = [t.FLIP_LEFT_RIGHT, t.ROTATE_180, t.FLIP_TOP_BOTTOM, t.TRANSPOSE, t.ROTATE_270, t.TRANSVERSE, t.ROTATE_90]
    return [None, *turns]


def check_orientation(folder: Path, tolerance: float) -> dict[str, Any]:
    """Decode each picture of an orientation set; all of one set (Landscape_*, Portrait_*) must match."""
    import numpy as np

    from mediasearch.errors import MediaError
    from mediasearch.media.decode import load_image
    from mediasearch.media.discover import IMAGE_EXTS

    TRANSFORMS = transforms()  # noqa: N806
    # A folder: every NAME_N.EXT under it (N in 0..8); a glob: the files it names. One set per NAME and EXT.
    found = sorted(Path(p) for p in glob.glob(str(folder))) if glob.has_magic(str(folder)) else folder.rglob("*")
    sets: dict[tuple[str, str], list[Path]] = {}
    for path in sorted(found):
        name = re.fullmatch(r"(.+)_([0-8])", path.stem)
        if name and path.suffix.lower().lstrip(".") in IMAGE_EXTS and path.is_file():
            sets.setdefault((name.group(1), path.suffix.lower()), []).append(path)
    result: dict[str, Any] = {"checked": 0, "upright": 0, "wrong": [], "failed": []}
    for _name, paths in sorted(sets.items()):
        decoded: dict[Path, Any] = {}
        for path in paths:
            try:
                image, _meta = load_image(path, target=224)
            except MediaError as exc:
                result["failed"].append(f"{path.name}: {exc}")
                continue
            decoded[path] = image
        if not decoded:
            continue
        # The reference: orientation 1 (or 0, no tag) when present, else the first decoded.
        ref_path = next((p for p in decoded if p.stem.endswith(("_1", "_0"))), next(iter(decoded)))
        ref = decoded[ref_path]
        for path, image in decoded.items():
            result["checked"] += 1
            # Upright when the picture matches the reference better as it is than in any of the 7 other
            # orientations of the reference (pictures of a set may differ a little: a label, re-encoding).
            diffs = {}
            for transpose in TRANSFORMS:
                turned = ref if transpose is None else ref.transpose(transpose)
                grey = np.asarray(image.convert("L").resize((64, 64)), dtype=np.float32)
                want = np.asarray(turned.convert("L").resize((64, 64)), dtype=np.float32)
                aspect = abs(image.width / image.height - turned.width / turned.height) > 0.05
                diffs[transpose] = float(np.abs(grey - want).mean()) + (1000.0 if aspect else 0.0)
            best = min(diffs, key=lambda t: diffs[t])
            if best is None and diffs[None] <= tolerance:
                result["upright"] += 1
            else:
                label = "as is" if best is None else best.name
                result["wrong"].append(
                    f"{path.name}: {image.width}x{image.height}, difference {diffs[None]:.1f} from {ref_path.name}, "
                    f"best match {label} ({diffs[best]:.1f})"
                )
    return result


def corpus(folder: Path, home: Path, timeout: float) -> dict[str, Any]:
    found, hidden = found_files(folder)
    index_args = ["--home", str(home), "--model", "demo", "index", str(folder), "--json", "--no-ocr", "--no-faces"]
    first = run_cli(index_args, folder, timeout)
    status = run_cli(["--home", str(home), "--model", "demo", "status", "--json"], folder, timeout)
    report = first["report"] or {}
    errors = report.get("errors", [])
    failed_paths = {e.get("path", "") for e in errors}
    classes = Counter(reason_class(str(e.get("error", ""))) for e in errors)
    loadavg_before = Path("/proc/loadavg").read_text().split()[:3]
    second = run_cli(index_args, folder, timeout)
    loadavg = Path("/proc/loadavg").read_text().split()[:3]
    again = second["report"] or {}
    reopened = sorted(failed_paths & set(second["opened"]))
    stat = status["report"] or {}
    return {
        "folder": str(folder),
        "found": found,
        "hidden": hidden,
        "scanned": report.get("scanned"),
        "indexed": report.get("added"),
        "failed": report.get("failed"),
        "failed_classes": dict(classes.most_common()),
        "failures": errors,
        "skipped": report.get("skipped"),
        "skipped_extensions": report.get("skipped_extensions", {}),
        "frames": report.get("frames"),
        "status": {k: stat.get(k) for k in ("files", "images", "videos", "frames")}
        | {"failures": len(stat.get("failures", []))},
        "first": {
            "wall_s": round(first["wall_s"], 2),
            "cpu_s": round(first["cpu_s"], 2),
            "code": first["code"],
            "files_opened": len(first["opened"]),
        },
        "crashes": [c for c in (crash_of(first), crash_of(status), crash_of(second)) if c],
        "stderr_lines": len(first["stderr"].splitlines()),  # with --json, anything here is noise (libtiff, ...)
        "stderr_tail": [r["stderr"].strip().splitlines()[-3:] for r in (first, status, second) if crash_of(r)],
        "hangs": sum(r["hung"] for r in (first, status, second)),
        "reindex": {
            "wall_s": round(second["wall_s"], 2),
            "cpu_s": round(second["cpu_s"], 2),
            "loadavg": f"{' '.join(loadavg_before)} -> {' '.join(loadavg)}",
            "code": second["code"],
            "unchanged": again.get("unchanged"),
            "added": again.get("added"),
            "updated": again.get("updated"),
            "removed": again.get("removed"),
            "failed": again.get("failed"),
            "model_loaded": second["imported"],
            "failed_files_opened": reopened,
            "files_opened": len(second["opened"]),
        },
    }


def problems(row: dict[str, Any]) -> list[str]:
    """What in a corpus's row is a bug to look at."""
    out = [f"crash: {c}" for c in row["crashes"]]
    if row["hangs"]:
        out.append(f"{row['hangs']} run(s) hung")
    re_ = row["reindex"]
    if re_["model_loaded"]:
        out.append(f"re-index imported {', '.join(re_['model_loaded'])}")
    if re_["failed_files_opened"]:
        out.append(f"re-index opened {len(re_['failed_files_opened'])} failed file(s) again")
    if re_["added"] or re_["updated"] or re_["removed"]:
        changed = f"{re_['added']} added, {re_['updated']} updated, {re_['removed']} removed"
        out.append(f"re-index changed entries: {changed}")
    if row["failed"] is not None and re_["failed"] != row["failed"]:
        out.append(f"re-index failed {re_['failed']} vs {row['failed']} in the first run")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--timeout", type=float, default=600.0, help="wall-clock limit of each CLI run, seconds")
    parser.add_argument(
        "--orientation",
        type=Path,
        action="append",
        default=[],
        help="an orientation set: a folder or a glob (repeatable)",
    )
    parser.add_argument("--tolerance", type=float, default=25.0, help="mean grey difference (0-255) that still matches")
    parser.add_argument("--keep", type=Path, help="keep the homes under this folder (default: removed)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="corpus-run-"))
    rows = []
    try:
        for folder in args.folders:
            home = (args.keep or work) / f"home-{folder.name}"
            shutil.rmtree(home, ignore_errors=True)
            rows.append(corpus(folder.resolve(), home, args.timeout))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    orientation = None
    for folder in args.orientation:
        one = check_orientation(folder, args.tolerance)
        orientation = one if orientation is None else {k: orientation[k] + one[k] for k in one}
    bad = any(problems(r) for r in rows) or bool(orientation and (orientation["wrong"] or orientation["failed"]))

    if args.json:
        print(json.dumps({"corpora": rows, "orientation": orientation}, indent=1))
        return 1 if bad else 0
    head = f"{'folder':<16}{'found':>7}{'scanned':>8}{'indexed':>8}{'failed':>7}{'skipped':>8}{'crash':>6}{'hang':>5}"
    head += f"{'1st s':>8}{'again s':>8}{'cpu s':>7}  loadavg"
    print(head)
    for r in rows:
        re_ = r["reindex"]
        print(
            f"{Path(r['folder']).name[:15]:<16}{r['found']:>7}{r['scanned'] or 0:>8}{r['indexed'] or 0:>8}"
            f"{r['failed'] or 0:>7}{r['skipped'] or 0:>8}{len(r['crashes']):>6}{r['hangs']:>5}"
            f"{r['first']['wall_s']:>8.1f}{re_['wall_s']:>8.2f}{re_['cpu_s']:>7.2f}  {re_['loadavg']}"
        )
    for r in rows:
        name = Path(r["folder"]).name
        if r["failed_classes"]:
            print(f"{name}: failed: " + ", ".join(f"{k} {v}" for k, v in r["failed_classes"].items()))
        top = sorted(r["skipped_extensions"].items(), key=lambda kv: (-kv[1], kv[0]))
        if top:
            print(f"{name}: skipped by extension: " + ", ".join(f".{k} {v}" for k, v in top))
        if r["stderr_lines"]:
            print(f"{name}: the first run wrote {r['stderr_lines']} line(s) on stderr")
        for p in problems(r):
            print(f"{name}: PROBLEM {p}")
        for tail in r["stderr_tail"]:
            print(f"{name}:   stderr: {' | '.join(tail)}")
    if orientation:
        print(
            f"orientation: {orientation['upright']} of {orientation['checked']} upright; "
            f"wrong {len(orientation['wrong'])}, failed {len(orientation['failed'])}"
        )
        for line in orientation["wrong"] + orientation["failed"]:
            print(f"orientation: PROBLEM {line}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
