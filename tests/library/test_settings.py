"""Settings precedence: command line > MEDIASEARCH_* environment > config.toml in the home > defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from mediasearch.errors import ConfigError
from mediasearch.settings import Settings, load_settings


def write_config(home: Path, text: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(text, encoding="utf-8")


def test_defaults_without_config_or_env(tmp_path: Path) -> None:
    s = load_settings({"home": tmp_path}, env={})
    assert s == Settings(home=tmp_path.resolve())
    assert s.model is None and s.frame_interval == 2.0


def test_config_file_then_env_then_cli(tmp_path: Path) -> None:
    write_config(tmp_path, 'model = "from-config"\nframe_interval = 5\nbatch_size = 7\n')
    env = {"MEDIASEARCH_MODEL": "from-env", "MEDIASEARCH_FRAME_INTERVAL": "3.5"}
    s = load_settings({"home": tmp_path, "model": "from-cli"}, env=env)
    assert s.model == "from-cli"  # cli beats env and config
    assert s.frame_interval == 3.5  # env beats config
    assert s.batch_size == 7  # config beats default
    s2 = load_settings({"home": tmp_path}, env=env)
    assert s2.model == "from-env"


def test_home_from_env_and_cli(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    write_config(a, 'device = "cpu"\n')
    assert load_settings({}, env={"MEDIASEARCH_HOME": str(a)}).home == a.resolve()
    assert load_settings({}, env={"MEDIASEARCH_HOME": str(a)}).device == "cpu"
    assert load_settings({"home": b}, env={"MEDIASEARCH_HOME": str(a)}).home == b.resolve()
    assert load_settings({"home": b}, env={"MEDIASEARCH_HOME": str(a)}).device == "auto"


def test_default_home_is_xdg(tmp_path: Path) -> None:
    s = load_settings({}, env={"XDG_DATA_HOME": str(tmp_path)})
    assert s.home == (tmp_path / "mediasearch").resolve()


def test_config_section_and_dashes(tmp_path: Path) -> None:
    write_config(tmp_path, '[mediasearch]\nqdrant-url = "http://q:6333"\ntagging = true\n')
    s = load_settings({"home": tmp_path}, env={})
    assert s.qdrant_url == "http://q:6333" and s.tagging is True


@pytest.mark.parametrize(
    ("config", "env", "message"),
    [
        ('frame_interval = "often"\n', {}, "frame_interval must be a float"),
        ("colour = 3\n", {}, "unknown setting"),
        ("model = [\n", {}, "cannot read config file"),
        ("", {"MEDIASEARCH_BATCH_SIZE": "lots"}, "MEDIASEARCH_BATCH_SIZE"),
        ("", {"MEDIASEARCH_DEVICE": "tpu"}, "device must be one of"),
        ("", {"MEDIASEARCH_TAGGING": "maybe"}, "tagging must be a bool"),
    ],
)
def test_bad_values_are_one_clear_error(tmp_path: Path, config: str, env: dict[str, str], message: str) -> None:
    write_config(tmp_path, config)
    with pytest.raises(ConfigError, match=message):
        load_settings({"home": tmp_path}, env=env)


def test_env_bool_and_empty_values(tmp_path: Path) -> None:
    s = load_settings({"home": tmp_path}, env={"MEDIASEARCH_TAGGING": "yes", "MEDIASEARCH_MODEL": ""})
    assert s.tagging is True and s.model is None
