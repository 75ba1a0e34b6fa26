"""decord and torch in one process: a video decoded before the model is loaded must not crash it.

decord2 loads the CUDA libraries torch installed (NVBLAS among them) with RTLD_GLOBAL; NVBLAS then took
over torch's BLAS calls, and torch died (SIGSEGV) in its first matrix product. The check needs a
process where torch is not loaded yet, so it runs in a child.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from child_env import settings_free_env

CHILD = """
import sys
from mediasearch.media.video import sample_video
sample = sample_video(sys.argv[1], interval=1.0, exact=True)
assert "torch" not in sys.modules and "decord" in sys.modules
from mediasearch.clip.loading import load_model
from mediasearch.clip.spec import ModelSpec
model = load_model(ModelSpec("demo"), device="cpu")
print(len(sample.frames), tuple(model.encode_texts(["a red circle"]).shape))
"""


def test_a_video_decoded_with_decord_before_the_model_is_loaded_does_not_crash_torch(
    make_video: Callable[..., Path],
) -> None:
    pytest.importorskip("decord")
    video = make_video("clip.mp4", seconds=6.0)
    repo = Path(__file__).resolve().parents[2]
    env = settings_free_env() | {"PYTHONPATH": str(repo)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(video)], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    frames, shape = done.stdout.split(" ", 1)
    assert int(frames) == 6 and shape.strip().startswith("(1,")
