"""Settings, built once at the entry point and passed down.

Precedence: command line > ``MEDIASEARCH_*`` environment > ``config.toml`` in the home > defaults.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from mediasearch.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ENV_PREFIX = "MEDIASEARCH_"
CONFIG_NAME = "config.toml"
DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"
DEVICES = ("auto", "cpu", "cuda", "mps")
IMAGE_RUNTIMES = ("auto", "torch", "openvino", "onnxruntime")  # clip.image_runtime.RUNTIMES


def default_home(env: Mapping[str, str]) -> Path:
    """The XDG data dir for mediasearch (``~/.local/share/mediasearch`` by default)."""
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "mediasearch"


@dataclass(frozen=True)
class Settings:
    """Everything a command needs to know about where and how to work."""

    home: Path
    model: str | None = None
    pretrained: str | None = None
    device: str = "auto"
    qdrant_url: str | None = None
    qdrant_api_key: str | None = None
    frame_interval: float = 2.0
    max_frames: int = 600
    batch_size: int = 0  # 0: chosen for the device (model.default_batch_size)
    image_runtime: str = "auto"  # where a CPU runs the image tower: measured once per model and machine
    workers: int = 0
    tagging: bool = False
    # Signals (index.enrichers): off deletes the signal's data at the next index run.
    ocr: bool = True
    faces: bool = True
    places: bool = True

    @property
    def config_path(self) -> Path:
        return self.home / CONFIG_NAME

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    def with_overrides(self, **kwargs: Any) -> Settings:
        """A copy with the given non-None values replaced."""
        return replace(self, **{k: v for k, v in kwargs.items() if v is not None})


_FIELD_TYPES: dict[str, type] = {
    "model": str,
    "pretrained": str,
    "device": str,
    "qdrant_url": str,
    "qdrant_api_key": str,
    "frame_interval": float,
    "max_frames": int,
    "batch_size": int,
    "image_runtime": str,
    "workers": int,
    "tagging": bool,
    "ocr": bool,
    "faces": bool,
    "places": bool,
}


def _coerce(name: str, value: Any, source: str) -> Any:
    kind = _FIELD_TYPES[name]
    try:
        if kind is bool and isinstance(value, str):
            lowered = value.strip().lower()
            if lowered not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(value)
            return lowered in ("1", "true", "yes", "on")
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {name} must be a {kind.__name__}, got {value!r}") from None


def _from_config_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    section = data.get("mediasearch", data)
    out: dict[str, Any] = {}
    for key, value in section.items():
        name = key.replace("-", "_")
        if name not in _FIELD_TYPES:
            raise ConfigError(f"{path}: unknown setting {key!r}")
        out[name] = _coerce(name, value, str(path))
    return out


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in _FIELD_TYPES:
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is not None and raw != "":
            out[name] = _coerce(name, raw, ENV_PREFIX + name.upper())
    return out


def load_settings(cli: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Merge command-line values (None = not given), environment and the home's config file."""
    cli = {k: v for k, v in (cli or {}).items() if v is not None}
    env = os.environ if env is None else env
    home_value = cli.pop("home", None) or env.get(ENV_PREFIX + "HOME") or default_home(env)
    home = Path(home_value).expanduser().resolve()
    merged: dict[str, Any] = {}
    merged.update(_from_config_file(home / CONFIG_NAME))
    merged.update(_from_env(env))
    for name, value in cli.items():
        if name not in _FIELD_TYPES:
            raise ConfigError(f"unknown setting {name!r}")
        merged[name] = _coerce(name, value, "command line")
    settings = Settings(home=home, **merged)
    _validate(settings)
    return settings


def _validate(settings: Settings) -> None:
    if settings.device not in DEVICES:
        raise ConfigError(f"device must be one of {', '.join(DEVICES)}, got {settings.device!r}")
    if settings.image_runtime not in IMAGE_RUNTIMES:
        raise ConfigError(f"image runtime must be one of {', '.join(IMAGE_RUNTIMES)}, got {settings.image_runtime!r}")
    if settings.frame_interval <= 0:
        raise ConfigError("frame interval must be positive")
    if settings.max_frames < 1 or settings.batch_size < 0:
        raise ConfigError("max frames must be at least 1 and batch size at least 0 (0: automatic)")


def settings_fields() -> list[str]:
    """Names of the settings that config files and the environment may set."""
    return [f.name for f in fields(Settings) if f.name != "home"]
