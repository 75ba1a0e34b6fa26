"""The lane: the daemon's model work runs on one thread (the one that owns torch's only OpenMP team)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mediasearch import lane


def served(client: Callable[[lane.Lane], Any]) -> Any:
    """Serve a lane on this thread while ``client(lane)`` runs on another; return what it returned."""
    out: dict[str, Any] = {}
    stop = threading.Event()

    def body(compute: lane.Lane) -> None:
        try:
            out["value"] = client(compute)
        except BaseException as exc:
            out["error"] = exc
        finally:
            stop.set()

    with lane.serving() as compute:
        worker = threading.Thread(target=body, args=(compute,))
        worker.start()
        compute.serve(stop)
    worker.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


def test_without_a_lane_work_runs_in_place() -> None:
    assert lane.run(threading.get_ident) == threading.get_ident()
    assert lane.run_if_idle(lambda: "lane", otherwise=lambda: "here") == "here"


def test_work_from_other_threads_runs_on_the_serving_thread() -> None:
    me = threading.get_ident()

    def client(compute: lane.Lane) -> tuple[int, int, int]:
        return lane.run(threading.get_ident), threading.get_ident(), compute.completed

    ran_on, caller, completed = served(client)
    assert ran_on == me and caller != me and completed == 1


def test_errors_reach_the_caller() -> None:
    def fail() -> None:
        raise ValueError("bad batch")

    with pytest.raises(ValueError, match="bad batch"):
        served(lambda compute: lane.run(fail))


def test_a_busy_lane_leaves_small_work_to_the_caller() -> None:
    started, release = threading.Event(), threading.Event()

    def long_job() -> str:
        started.set()
        release.wait(10)
        return "batch"

    def client(compute: lane.Lane) -> tuple[str, str, int]:
        results: list[str] = []
        other = threading.Thread(target=lambda: results.append(lane.run(long_job)))
        other.start()
        started.wait(10)
        busy = lane.run_if_idle(lambda: "lane", otherwise=lambda: "here")
        release.set()
        other.join()
        idle = lane.run_if_idle(lambda: "lane", otherwise=lambda: "here")
        return busy, f"{results[0]} then {idle}", compute.completed

    busy, later, completed = served(client)
    assert busy == "here" and later == "batch then lane" and completed == 2


def test_a_stopping_lane_runs_what_was_queued_and_then_nothing() -> None:
    stop = threading.Event()
    ran: list[str] = []
    with lane.serving() as compute:
        first = compute.submit(lambda: ran.append("queued before the stop"))
        stop.set()
        compute.serve(stop)
        assert compute.submit(lambda: ran.append("too late")) is None
    assert first is not None and first.done() and ran == ["queued before the stop"]
    assert lane.run(lambda: "in place") == "in place"


def test_a_job_runs_at_the_callers_thread_count() -> None:
    import torch

    own = torch.get_num_threads()
    seen = served(lambda compute: lane.run(torch.get_num_threads, threads=1))
    assert seen == 1 and torch.get_num_threads() == own


def test_the_model_encodes_on_the_lane(demo_model: Any) -> None:
    texts = ["a photo of a lane test circle", "a photo of a lane test square"]

    def client(compute: lane.Lane) -> tuple[Any, int]:
        return demo_model.encode_texts(texts), compute.completed

    vectors, completed = served(client)
    assert completed == 1 and vectors.shape == (2, demo_model.dim)
    for text in texts:  # encode them again, in place this time
        demo_model._text_cache.pop(text)
    np.testing.assert_allclose(demo_model.encode_texts(texts), vectors, atol=1e-5)


def test_index_batches_are_stacked_on_the_lane(demo_model: Any) -> None:
    """At 224 px a batch's stack is parallel work: on the index thread it would start a second team."""
    import torch

    from mediasearch.index.pipeline import _stack

    tensors = [torch.rand(3, 224, 224) for _ in range(2)]
    (batch, failed), completed = served(lambda compute: (_stack(tensors, demo_model), compute.completed))
    assert completed == 1 and not failed and tuple(batch.shape) == (2, 3, 224, 224)


def test_image_batches_encode_on_the_lane(demo_model: Any) -> None:
    import torch

    batch = torch.rand(3, 3, demo_model.image_size, demo_model.image_size)
    vectors, completed = served(lambda compute: (demo_model.encode_tensors(batch), compute.completed))
    assert completed == 1
    np.testing.assert_allclose(demo_model.encode_tensors(batch), vectors, atol=1e-5)


LANE_PROCESS = """
import sys, threading
import torch
from mediasearch import lane
from mediasearch.library import home as library
from mediasearch.index.runner import IndexOptions, index_paths
from mediasearch.settings import load_settings

torch.set_num_threads(4)  # more than the decode workers take: the index thread's count stays above 1
settings = load_settings({"home": sys.argv[1], "model": "demo", "device": "cpu"}, env={})
opened = library.open_for_index(settings)
stop = threading.Event()

def work():
    try:
        index_paths([sys.argv[2]], opened.model, opened.store, IndexOptions(workers=2))
        opened.model.encode_texts(["a photo of a red circle", "a photo of a blue square"])
        from PIL import Image
        opened.model.encode_images([Image.new("RGB", (80, 60), (0, 90, 200))])
    finally:
        stop.set()

with lane.serving() as compute:
    threading.Thread(target=work).start()
    compute.serve(stop)
opened.close()
print("done", compute.completed)
"""


def test_model_work_from_other_threads_starts_no_second_openmp_team(
    tmp_path: Path, make_image: Callable[..., Path]
) -> None:
    """Index batches, texts and images encoded from another thread all run on the lane's team."""
    folder = tmp_path / "photos"
    for i in range(6):
        make_image(folder / f"p{i}.jpg", size=(160, 120), color=(40 * i, 200 - 30 * i, 90))
    env = {**os.environ, "OMP_DISPLAY_AFFINITY": "TRUE", "OMP_AFFINITY_FORMAT": "omp-team-member %n %i"}
    out = subprocess.run(
        [sys.executable, "-c", LANE_PROCESS, str(tmp_path / "home"), str(folder)],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1].startswith("done")
    members = re.findall(r"omp-team-member (\d+) (\S+)", out.stdout + out.stderr)
    if not members:
        pytest.skip("torch's OpenMP here does not report its teams (not GNU OpenMP)")
    masters = {tid for num, tid in members if num == "0"}
    assert len(masters) == 1, f"{len(masters)} threads started OpenMP teams"


def test_openmp_spins_less_unless_the_user_chose() -> None:
    env: dict[str, str] = {}
    lane.tune_openmp(env)
    assert env == {"GOMP_SPINCOUNT": lane.SPIN_COUNT}
    for chosen in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "1000000"}):
        env = dict(chosen)
        lane.tune_openmp(env)
        assert env == chosen


def test_the_cli_entry_point_tunes_openmp_before_torch_loads() -> None:
    script = (
        "import os, sys\n"
        "sys.argv = ['mediasearch', '--version']\n"
        "from mediasearch import cli\n"
        "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
        "print(os.environ.get('GOMP_SPINCOUNT'), 'torch' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split()[-2:] == [lane.SPIN_COUNT, "False"]


def test_spare_cpus_are_the_usable_ones_no_other_task_wants(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    assert 0 <= lane.spare_cpus() < len(os.sched_getaffinity(0))  # the caller itself runs
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(lane, "open", lambda *a: io.BytesIO(b"0.50 0.40 0.30 3/200 1234\n"), raising=False)
    assert lane.spare_cpus() == 1  # 4 usable, 3 running: the caller and two others
    monkeypatch.setattr(lane, "open", lambda *a: io.BytesIO(b"9.9 9.9 9.9 12/200 1234\n"), raising=False)
    assert lane.spare_cpus() == 0

    def unreadable(*args: Any) -> Any:
        raise OSError("no /proc here")

    monkeypatch.setattr(lane, "open", unreadable, raising=False)
    assert lane.spare_cpus() == 0  # unknown: no spare core assumed
