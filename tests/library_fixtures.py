"""Fixtures for tests that index and search with the bundled demo model (loaded via conftest)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from child_env import SUITE_IMAGE_RUNTIME
from typer.testing import CliRunner

from mediasearch.settings import Settings, load_settings


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may reach for the network: hub downloads fail at once."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MEDIASEARCH_IMAGE_RUNTIME", SUITE_IMAGE_RUNTIME)  # tests/child_env.py says why
    for name in ("MEDIASEARCH_HOME", "MEDIASEARCH_MODEL", "MEDIASEARCH_PRETRAINED", "MEDIASEARCH_QDRANT_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def demo_model() -> Any:
    """The bundled demo model, loaded once per test session."""
    from mediasearch.clip.loading import load_model
    from mediasearch.clip.spec import ModelSpec

    return load_model(ModelSpec("demo"), device="cpu")


@pytest.fixture
def demo_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Factory: settings for a fresh home (under tmp_path) that use the demo model."""

    def make(home: Path | None = None, **overrides: Any) -> Settings:
        return load_settings({"home": home or tmp_path / "home", "model": "demo", "device": "cpu", **overrides}, env={})

    return make


@pytest.fixture(autouse=True)
def _share_demo_model(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """In-process commands re-use the session's demo model instead of loading it again."""
    if "demo_model" not in request.fixturenames and "cli" not in request.fixturenames:
        yield
        return
    model = request.getfixturevalue("demo_model")
    from mediasearch.clip.spec import ModelSpec
    from mediasearch.library import models as library

    real_load = library.load

    def load(settings: Settings, spec: ModelSpec, **kwargs: Any) -> Any:
        # A fine-tune checkpoint of the demo model (--pretrained CKPT) is a different model: load it.
        return model if spec.is_demo and not spec.pretrained else real_load(settings, spec, **kwargs)

    monkeypatch.setattr(library, "load", load)
    yield


class Cli:
    """Runs the real Typer app in-process against one home; ``json`` parses --json output."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.runner = CliRunner()

    def __call__(self, *args: str, model: str | None = "demo", ok: bool = True) -> Any:
        from mediasearch.cli import app

        opts = ["--home", str(self.home), "--device", "cpu"] + (["--model", model] if model else [])
        result = self.runner.invoke(app, [*opts, *args])
        if ok and result.exit_code != 0:
            raise AssertionError(f"exit {result.exit_code}: {result.output}\n{result.exception!r}")
        return result

    def json(self, *args: str, model: str | None = "demo") -> Any:
        return json.loads(self(*args, "--json", model=model).stdout)


@pytest.fixture
def cli(tmp_path: Path, demo_model: Any) -> Cli:
    return Cli(tmp_path / "home")


@pytest.fixture(scope="session")
def shapes_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[Path, str, str]]]:
    """240 freshly rendered shape photos (10 per class) in mixed formats, shared read-only."""
    from mediasearch.lab.shapes import make_library

    folder = tmp_path_factory.mktemp("shapes240")
    return folder, make_library(folder, 240, seed=20261127)
