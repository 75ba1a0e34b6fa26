"""deploy/: the systemd units pass `systemd-analyze verify` and the compose files `docker compose config`
(each where the tool is installed), and the compose file wires the daemon to Qdrant safely."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNITS = ("mediasearch.service", "mediasearch-index.service", "mediasearch-index.timer")


def _mediasearch_script() -> str:
    """The installed console script: verify checks that ExecStart= names an executable."""
    found = Path(sys.executable).with_name("mediasearch")
    return str(found) if found.exists() else shutil.which("mediasearch") or "/bin/true"


@pytest.mark.parametrize("scope", ["user", "system"])
def test_systemd_units_verify(scope: str, tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    script = _mediasearch_script()
    for name in UNITS:
        text = (DEPLOY / "systemd" / scope / name).read_text()
        text = text.replace("%h/.local/bin/mediasearch", script).replace("/usr/local/bin/mediasearch", script)
        (tmp_path / name).write_text(text)
    runtime = tmp_path / "runtime"  # a user manager needs a runtime directory, even to verify
    runtime.mkdir(mode=0o700)
    command = ["systemd-analyze", *(["--user"] if scope == "user" else []), "verify", "--man=no"]
    out = subprocess.run(
        [*command, *UNITS],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "Unknown" not in out.stderr and "mediasearch" not in out.stderr, out.stderr


def test_timer_starts_the_index_service() -> None:
    for scope in ("user", "system"):
        timer = (DEPLOY / "systemd" / scope / "mediasearch-index.timer").read_text()
        assert "OnCalendar=" in timer and "Persistent=true" in timer
        service = (DEPLOY / "systemd" / scope / "mediasearch-index.service").read_text()
        assert "Type=oneshot" in service and "mediasearch index" in service


def _compose_files() -> list[Path]:
    return [DEPLOY / "docker-compose.yml", DEPLOY / "docker-compose.gpu.yml"]


def test_compose_file_shape() -> None:
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    qdrant, daemon = compose["services"]["qdrant"], compose["services"]["mediasearch"]
    assert qdrant["image"].startswith("qdrant/qdrant:")
    assert daemon["environment"]["MEDIASEARCH_QDRANT_URL"] == "http://qdrant:6333"
    assert "MEDIASEARCH_TOKEN" in daemon["environment"]  # it listens on 0.0.0.0 inside the container
    assert daemon["command"][:2] == ["serve", "/photos"] and "0.0.0.0" in daemon["command"]
    assert all(port.startswith("127.0.0.1:") for port in daemon["ports"])
    gpu = yaml.safe_load((DEPLOY / "docker-compose.gpu.yml").read_text())["services"]["mediasearch"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]


def test_docker_compose_config() -> None:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("the docker compose client is not installed")
    env = {**os.environ, "MEDIASEARCH_TOKEN": "0123456789abcdef", "PHOTOS": "/tmp"}
    files = [arg for f in _compose_files() for arg in ("-f", str(f))]
    out = subprocess.run(
        [docker, "compose", *files, "config", "--quiet"], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
