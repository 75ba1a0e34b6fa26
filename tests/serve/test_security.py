"""Security: loopback by default, a token on every route that reads the index, only indexed files
served (symlinks and ``..`` included), no shell with file names, control characters shown escaped,
and the HTTP API fuzzed from its own OpenAPI spec (schemathesis) without a server error.
"""

from __future__ import annotations

import ast
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import schemathesis
from daemon_helpers import Daemon
from hypothesis import HealthCheck, settings

from mediasearch.lab.shapes import render, save_image

pytestmark = pytest.mark.faults

EVIL_NAME = "evil\nname\x1b[31m\u202e.png"
RAW_CONTROLS = ("\x1b", "\x07", "\r", "\u202e")
REPO = Path(__file__).resolve().parents[2]


def photo(path: Path, colour: str = "red", shape: str = "circle", seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(render(colour, shape, rng=np.random.default_rng(seed), size=(96, 96)), path, "png")
    return path


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, Path, Path]]:
    """A daemon over a library with symlinks in and out of it and a file named with control characters."""
    base = tmp_path_factory.mktemp("guarded")
    lib, outside = base / "lib", base / "outside"
    photo(lib / "photos" / "a.png")
    photo(lib / "photos" / "b.png", "blue", "star", 1)
    photo(lib / EVIL_NAME, "green", "square", 2)
    photo(lib / "swap.png", "yellow", "triangle", 3)
    photo(outside / "secret_a.png", "purple", "star", 4)
    photo(outside / "secret_b.png", "orange", "circle", 5)
    photo(outside / "dir" / "in_dir.png", "red", "square", 6)
    (lib / "link_out.png").symlink_to(outside / "secret_a.png")
    (lib / "passwd.jpg").symlink_to("/etc/passwd")
    (lib / "linkdir").symlink_to(outside / "dir", target_is_directory=True)
    # A long debounce: the swaps below stay un-indexed while the test asks for them.
    daemon = Daemon(base / "home", str(lib), "--rescan-every", "off", "--debounce", "60")
    try:
        daemon.wait_ready().wait_idle()
        yield daemon, lib, outside
    finally:
        daemon.stop()


def _get(daemon: Daemon, route: str, token: str | None = "", **params: str) -> int:
    assert daemon.client is not None
    info = daemon.client.info
    url = f"{info.url}{route}?{urllib.parse.urlencode(params)}"
    headers = {"X-Mediasearch-Token": info.token if token == "" else token} if token is not None else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_loopback_by_default_and_a_token_on_every_route(guarded: tuple[Daemon, Path, Path]) -> None:
    daemon, lib, _ = guarded
    assert daemon.client is not None
    info = daemon.client.info
    assert info.host == "127.0.0.1" and info.url.startswith("http://127.0.0.1:")
    port = int(info.url.rsplit(":", 1)[1])
    listening = [
        line.split()[1] for line in Path("/proc/net/tcp").read_text().splitlines()[1:] if line.split()[3] == "0A"
    ]
    assert f"0100007F:{port:04X}" in listening  # bound to 127.0.0.1 only, not 0.0.0.0
    spec = json.loads(urllib.request.urlopen(f"{info.url}/openapi.json", timeout=30).read())
    assert set(spec["paths"]) - {"/health"}, spec["paths"]
    for route, methods in spec["paths"].items():
        if route == "/health":
            continue
        for method in methods:
            body = json.dumps({"text": "x", "path": str(lib), "paths": [str(lib)]}).encode()
            request = urllib.request.Request(
                f"{info.url}{route}?path={urllib.parse.quote(str(lib / 'photos' / 'a.png'))}&q=x",
                data=body if method == "post" else None,
                method=method.upper(),
                headers={"Content-Type": "application/json", "X-Mediasearch-Token": "wrong-token-0123456789"},
            )
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=30)
            assert refused.value.code == 401, (method, route)
    logs = (daemon.home / "logs" / "daemon.log").read_text() + daemon.output.read_text()
    assert info.token not in logs


@pytest.mark.parametrize("route", ["/thumbnail", "/media"])
def test_only_indexed_files_are_served(guarded: tuple[Daemon, Path, Path], route: str) -> None:
    daemon, lib, outside = guarded
    served = {
        lib / "photos" / "a.png": 200,
        lib / "photos" / ".." / "photos" / "b.png": 200,  # lexically the indexed file
        lib / EVIL_NAME: 200,
        lib / "link_out.png": 200,  # indexed through the link: its content was indexed
        lib / "linkdir" / "in_dir.png": 200,
        outside / "secret_a.png": 404,  # the link's target by its own name: never indexed
        outside / "dir" / "in_dir.png": 404,
        lib / "passwd.jpg": 404,  # a link to a file that is not a picture: not indexed
        lib / "photos" / ".." / ".." / "outside" / "secret_b.png": 404,
        Path("/etc/passwd"): 404,
        daemon.home / "daemon.json": 404,
        lib / "nothing.png": 404,
    }
    for path, code in served.items():
        assert _get(daemon, route, path=str(path)) == code, path
    assert _get(daemon, route, path="photos/a.png") == 404  # relative
    assert _get(daemon, route, token=None, path=str(lib / "photos" / "a.png")) == 401


def test_files_swapped_after_indexing_are_not_served(guarded: tuple[Daemon, Path, Path]) -> None:
    """A symlink re-pointed, or an indexed file replaced by a link, serves nothing until re-indexed."""
    daemon, lib, outside = guarded
    for route in ("/thumbnail", "/media"):
        assert _get(daemon, route, path=str(lib / "swap.png")) == 200
    (lib / "link_out.png").unlink()
    (lib / "link_out.png").symlink_to(outside / "secret_b.png")
    (lib / "swap.png").unlink()
    (lib / "swap.png").symlink_to("/etc/passwd")
    for route in ("/thumbnail", "/media"):
        for name in ("link_out.png", "swap.png"):
            assert _get(daemon, route, path=str(lib / name)) == 404, (route, name)
    assert _get(daemon, "/static/..%2F..%2Fapi.py") == 404


SHELL_CALLS = {"system", "popen", "getoutput", "getstatusoutput", "spawnl", "spawnlp", "execl", "execlp"}
PROCESS_CALLS = {"run", "Popen", "call", "check_call", "check_output"}


def test_no_shell_is_ever_invoked() -> None:
    """Every child process gets an argument list, never a command line a shell would parse."""
    offenders = []
    for path in sorted([*(REPO / "mediasearch").rglob("*.py"), *(REPO / "scripts").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            name, where = node.func.attr, f"{path.relative_to(REPO)}:{node.lineno}"
            if name in SHELL_CALLS and isinstance(node.func.value, ast.Name) and node.func.value.id == "os":
                offenders.append(f"{where} os.{name}")
            if name in PROCESS_CALLS and isinstance(node.func.value, ast.Name) and node.func.value.id == "subprocess":
                if any(k.arg == "shell" for k in node.keywords):
                    offenders.append(f"{where} shell=")
                if node.args and isinstance(node.args[0], ast.Constant | ast.JoinedStr | ast.BinOp):
                    offenders.append(f"{where} a command string")
    assert offenders == []


def test_control_characters_are_shown_escaped(tmp_path: Path, cli: Any, make_broken: Any) -> None:
    lib = tmp_path / "lib"
    evil = photo(lib / EVIL_NAME)
    photo(lib / "[bold]x[red].png", "blue", "star", 1)
    make_broken(lib / "bad\x07\r.jpg", "text_as_jpg")
    outputs = [cli("index", str(lib))]
    outputs += [cli("query", "a red circle"), cli("query", "a red circle", "--paths"), cli("query", "[/]")]
    outputs += [cli("status"), cli("similar", str(evil)), cli("similar", str(lib / "gone\x1b.png"), ok=False)]
    outputs += [cli("classify", str(evil), "--labels", "red circle, blue star"), cli("embed", str(evil))]
    expected = [0, 0, 0, 0, 0, 0, 1, 0, 0]  # only `similar` of a file that does not exist fails
    assert [result.exit_code for result in outputs] == expected, [r.stderr for r in outputs]
    for result in outputs:
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        for ch in RAW_CONTROLS:
            assert ch not in result.stdout + result.stderr, (ch, result.stdout, result.stderr)
    shown = "evil\\nname\\x1b[31m\\u202e.png"
    assert str(lib / shown) in outputs[2].stdout.splitlines()
    assert "bad\\x07\\r.jpg" in outputs[0].stderr
    assert outputs[3].exit_code == 0  # a query that looks like rich markup is just text
    assert "gone\\x1b.png" in outputs[6].stderr


# -- the HTTP API, fuzzed from its OpenAPI spec ---------------------------------------------------------


FUZZ_EXAMPLES = 25  # per operation and generation mode


def test_api_fuzz_never_a_server_error(guarded: tuple[Daemon, Path, Path]) -> None:
    """Valid and invalid requests built from the daemon's own spec: never a 5xx, never a crash.

    POST /index is left out: it would walk whatever folder it is given (the fault tests cover it).
    """
    from hypothesis import given
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    daemon, _, _ = guarded
    assert daemon.client is not None
    info = daemon.client.info
    schema = schemathesis.openapi.from_url(f"{info.url}/openapi.json").exclude(path="/index")
    calls: list[int] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def call(case: Any) -> None:
                response = case.call(headers={"X-Mediasearch-Token": info.token}, timeout=60)
                calls.append(response.status_code)
                assert response.status_code < 500, (case.as_curl_command(), response.status_code, response.text[:300])

            try:
                call()
            except Unsatisfiable:  # no parameters to make invalid (GET /status, /tags)
                assert mode == GenerationMode.NEGATIVE
    assert daemon.proc.poll() is None
    print(f"\nschemathesis: {len(calls)} requests, status codes {sorted(set(calls))}")


def test_a_bad_file_named_in_a_request_is_a_client_error(guarded: tuple[Daemon, Path, Path]) -> None:
    """Files a request names (a vocabulary, learned prompts) that are missing (404) or wrong (400), never 500."""
    daemon, lib, _ = guarded
    assert daemon.client is not None
    info = daemon.client.info
    not_prompts = photo(lib.parent / "not_prompts.png")
    for body, code in (({"prompts": "/nonexistent/p.safetensors"}, 404), ({"prompts": str(not_prompts)}, 400),
                       ({"vocab": "/nonexistent/v.txt"}, 404)):
        request = urllib.request.Request(f"{info.url}/tag", data=json.dumps(body).encode(), method="POST",
                                         headers={"X-Mediasearch-Token": info.token,
                                                  "Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=60)
        assert caught.value.code == code, body


def test_daemon_survived_the_fuzzing(guarded: tuple[Daemon, Path, Path]) -> None:
    daemon, lib, _ = guarded
    assert daemon.proc.poll() is None
    assert daemon.client is not None and daemon.client.health()["state"] == "ready"
    # Still answers with the library as it was (the module's folders are shared: nothing is deleted here).
    assert _get(daemon, "/media", path=str(lib / "photos" / "a.png")) == 200
