"""The demo's last line leads to the real model, not to indexing real photos with the demo model."""

from __future__ import annotations

from pathlib import Path

from mediasearch.cli.demo import next_steps


def test_the_demo_points_to_the_real_model_and_leaves_its_home(tmp_path: Path) -> None:
    text = next_steps(tmp_path / "home")
    index_lines = [line for line in text.splitlines() if " index " in line]
    assert index_lines and all("--model demo" not in line and "--home" not in line for line in index_lines)
    assert "600 MB" in text and "download once" in text
    assert f"--home {tmp_path / 'home'} query" in text  # more queries on the sample, in its own home
