"""Security: loopback by default, a token on every route that reads the index, only indexed files
served (symlinks and ``..`` included), no shell with file names, control characters shown escaped,
and the HTTP API fuzzed from its own OpenAPI spec (schemathesis) without a server error.

Then the trust boundary (issue #27), one test per finding: vocabularies never read from a path, no
index or forget outside the library roots, no existence oracle, two roles, limits before the token,
connections capped and timed, one daemon per home, a private home, the Host header, MCP, redaction,
and bounded work per request.
"""

from __future__ import annotations

import ast
import contextlib
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
from daemon_helpers import Daemon, wait_for
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
    """Learned prompts a request names: outside the library roots (403), missing or wrong (400); a
    vocabulary is no file at all (422): never 500."""
    daemon, lib, _ = guarded
    assert daemon.client is not None
    info = daemon.client.info
    not_prompts = photo(lib / "not_prompts.png")
    for body, code in (({"prompts": "/nonexistent/p.safetensors"}, 403), ({"prompts": str(not_prompts)}, 400),
                       ({"prompts": str(lib / "nonexistent.safetensors")}, 400), ({"vocab": "/etc/passwd"}, 422)):
        request = urllib.request.Request(f"{info.url}/tag", data=json.dumps(body).encode(), method="POST",
                                         headers={"X-Mediasearch-Token": info.token,
                                                  "Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=60)
        assert caught.value.code == code, body


# -- the trust boundary (issue #27) -------------------------------------------------------------------


def _call(
    daemon: Daemon,
    method: str,
    route: str,
    body: Any = None,
    token: str | None = "",
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """One request; the status and the decoded JSON answer (the admin token unless ``token`` says)."""
    assert daemon.client is not None
    info = daemon.client.info
    sent = {"Content-Type": "application/json", **(headers or {})}
    if token is not None:
        sent["X-Mediasearch-Token"] = info.token if token == "" else token
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{info.url}{route}", data=data, headers=sent, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return int(response.status), json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, json.loads(raw) if raw.startswith(b"{") else raw


def test_a_vocabulary_is_sent_never_read_from_a_path(guarded: tuple[Daemon, Path, Path], tmp_path: Path) -> None:
    """`POST /tag {"vocab": "/etc/shadow"}` read the file and kept its lines as tags (its first value leaked
    into the error and the log): now labels arrive in the body and no vocabulary path is read."""
    daemon, lib, outside = guarded
    secret = outside / "secrets.txt"
    secret.write_text("password=hunter2-do-not-leak\n")
    for vocab in ("/etc/passwd", str(secret)):
        status, answer = _call(daemon, "POST", "/tag", {"vocab": vocab})
        assert status == 422 and answer["kind"] == "ValidationError", answer
    status, answer = _call(daemon, "POST", "/tag", {"labels": ["a red circle", "a blue star"], "thresholds": {}})
    assert status == 200 and set(answer["tags"]) <= {"a red circle", "a blue star"}, answer
    assert answer["tags"]  # the labels sent were used
    logs = (daemon.home / "logs" / "daemon.log").read_text() + daemon.output.read_text()
    meta = "".join(p.read_text(errors="replace") for p in daemon.home.rglob("*.json"))
    assert "hunter2" not in logs + meta and "root:x:0" not in meta


def test_index_and_forget_stay_within_the_library_roots(guarded: tuple[Daemon, Path, Path]) -> None:
    """`POST /index {"paths": ["/etc"]}` was accepted, and `/forget {"path": "/"}` dropped everything."""
    daemon, lib, outside = guarded
    before = len(daemon.listing(lib))
    for path in ("/etc", str(outside), str(lib / ".." / "outside")):
        status, answer = _call(daemon, "POST", "/index", {"paths": [path]})
        assert status == 403 and "outside the library roots" in answer["error"], answer
        assert "mediasearch index" in answer["error"] and "\n" not in answer["error"]  # how to add a root
    status, answer = _call(daemon, "POST", "/index", {"paths": ["photos"]})
    assert status == 403 and "absolute" in answer["error"]  # relative: not against the daemon's cwd
    status, answer = _call(daemon, "POST", "/index", {"paths": [str(lib / "nothing-here")], "watch": True})
    assert status == 400, answer
    assert str(lib / "nothing-here") not in daemon.status()["daemon"]["roots"]
    for path, code in (("/", 403), (str(outside), 403), (str(lib / "photos" / "nothing.png"), 404)):
        status, answer = _call(daemon, "POST", "/forget", {"path": path})
        assert status == code, (path, answer)
    assert len(daemon.listing(lib)) == before > 0
    assert _get(daemon, "/media", path=str(outside / "secret_a.png")) == 404


def test_image_terms_and_similar_tell_nothing_about_other_files(guarded: tuple[Daemon, Path, Path]) -> None:
    """A path that exists (not a picture) and one that does not answer the same: only indexed files count."""
    daemon, lib, outside = guarded
    answers = []
    for path in ("/etc/passwd", "/nonexistent/x.png", str(outside / "secret_a.png")):
        image = {"terms": [{"kind": "image", "value": path}]}
        answers.append(_call(daemon, "POST", "/query", image))
        answers.append(_call(daemon, "POST", "/similar", {"path": path}))
    assert {status for status, _ in answers} == {404}
    assert {answer["kind"] for _, answer in answers} == {"NotIndexedError"}
    assert not any("identify" in answer["error"] or "no such file" in answer["error"] for _, answer in answers)
    status, hits = _call(daemon, "POST", "/similar", {"path": str(lib / "photos" / "a.png")})
    assert status == 200 and hits


def test_the_read_token_searches_and_views_but_changes_nothing(guarded: tuple[Daemon, Path, Path]) -> None:
    daemon, lib, _ = guarded
    assert daemon.client is not None
    info = daemon.client.info
    assert info.read_token and info.read_token != info.token
    read = info.read_token
    assert _call(daemon, "POST", "/query", {"text": "a red circle"}, token=read)[0] == 200
    assert _call(daemon, "GET", "/status", token=read)[0] == 200
    assert _call(daemon, "GET", "/tags", token=read)[0] == 200
    assert _get(daemon, "/thumbnail", token=read, path=str(lib / "photos" / "a.png")) == 200
    assert _get(daemon, "/media", token=read, path=str(lib / "photos" / "a.png")) == 200
    for route, body in (("/index", {"paths": [str(lib)]}), ("/forget", {"path": str(lib)}), ("/tag", {})):
        status, answer = _call(daemon, "POST", route, body, token=read)
        assert status == 403 and "admin token" in answer["error"], (route, answer)
    assert len(daemon.listing(lib)) > 0


def test_bodies_are_refused_before_the_token_and_before_being_read(guarded: tuple[Daemon, Path, Path]) -> None:
    """Three 400 MB bodies without a token grew the daemon by 1.7 GB: now the declared size is refused at
    once (413), a body without a token is never read (401), and a chunked body is cut at its cap."""
    import socket

    daemon, _, _ = guarded
    assert daemon.client is not None
    host, port = daemon.client.info.url.removeprefix("http://").split(":")

    def raw(head: str, body: bytes = b"") -> bytes:
        """The answer to a request written by hand; the body is sent beside the reading, since the
        daemon answers (and closes) before it has all of it."""
        import threading

        with socket.create_connection((host, int(port)), timeout=30) as sock:

            def send() -> None:
                with contextlib.suppress(OSError):  # the daemon closed the connection: what it wanted
                    sock.sendall(head.encode() + body)

            sender = threading.Thread(target=send)
            sender.start()
            chunks = []
            with contextlib.suppress(ConnectionResetError):
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
            sender.join()
            return b"".join(chunks)

    big = f"POST /query HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\nContent-Length: {400 << 20}\r\n\r\n"
    assert raw(big).startswith(b"HTTP/1.1 401")  # no token: refused without reading 400 MB
    token = daemon.client.info.token
    authed = big.replace("Host:", f"X-Mediasearch-Token: {token}\r\nHost:")
    assert raw(authed).startswith(b"HTTP/1.1 413")  # a token, but too large: refused from the header
    chunk = b"x" * (1 << 16)
    chunked = (
        f"POST /index HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Mediasearch-Token: {token}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(20)) + b"0\r\n\r\n"  # 1.25 MB
    assert raw(chunked, body).startswith(b"HTTP/1.1 413")
    assert daemon.client.health()["state"] == "ready"


def test_the_host_header_is_checked_and_no_third_party_docs(guarded: tuple[Daemon, Path, Path]) -> None:
    """DNS rebinding reached /health, /openapi.json, /docs and the page; /docs loaded Swagger UI from a CDN."""
    daemon, _, _ = guarded
    assert daemon.client is not None
    port = daemon.client.info.url.rsplit(":", 1)[1]
    for route in ("/health", "/openapi.json", "/", "/status"):
        status, answer = _call(daemon, "GET", route, headers={"Host": f"rebound.attacker.example:{port}"})
        assert status == 400 and answer["kind"] == "HostNotAllowed", (route, answer)
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "localhost"):
        assert _call(daemon, "GET", "/health", headers={"Host": host})[0] == 200, host
    for route in ("/docs", "/redoc"):
        assert _call(daemon, "GET", route)[0] == 404
    page = urllib.request.urlopen(f"{daemon.client.info.url}/", timeout=30)
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]


def test_a_private_home_and_files_that_name_no_command_line(guarded: tuple[Daemon, Path, Path]) -> None:
    """The home was 0755 and its store, state, log and meta files 0644; the owner file held the command line."""
    daemon, _, _ = guarded
    home = daemon.home
    assert home.stat().st_mode & 0o777 == 0o700
    loose = [p for p in home.rglob("*") if p.is_file() and not p.is_symlink() and p.stat().st_mode & 0o077]
    assert loose == []
    owners = list((home / "store").glob("*.owner"))
    assert owners and all("--rescan-every" not in p.read_text() for p in owners)
    assert daemon.client is not None
    health = daemon.client.health()
    assert "--" not in health["message"] and health["pid"] == daemon.proc.pid


def test_an_existing_home_is_tightened_on_open(tmp_path: Path, cli: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A home made 0755 (by an older version) is made private when the store is opened, saying so once
    (a warning: on a terminal, one line on stderr)."""
    home = cli.home
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    (home / "state.json").write_text("{}")
    (home / "state.json").chmod(0o644)
    photo(tmp_path / "lib" / "a.png")
    result = cli("index", str(tmp_path / "lib"))
    assert result.exit_code == 0, result.stderr
    assert home.stat().st_mode & 0o777 == 0o700
    assert (home / "state.json").stat().st_mode & 0o777 == 0o600
    said = [r.getMessage() for r in caplog.records if "made it private" in r.getMessage()]
    assert len(said) == 1 and "\n" not in said[0] and str(home) in said[0]


def test_one_daemon_per_home_decided_before_binding(tmp_path: Path) -> None:
    """Two `serve` started together: the loser waited on the store and later owned it, unknown to all."""
    lib = tmp_path / "lib"
    photo(lib / "a.png")
    home = tmp_path / "home"
    first, second = Daemon(home, str(lib), "--rescan-every", "off"), Daemon(home, str(lib), "--rescan-every", "off")
    try:
        wait_for(lambda: first.proc.poll() is not None or second.proc.poll() is not None, 60, "one of them gives up")
        loser, winner = (first, second) if first.proc.poll() is not None else (second, first)
        assert loser.proc.returncode == 1
        said = [line for line in loser.output.read_text().splitlines() if "already serves" in line]
        assert len(said) == 1 and f"pid {winner.proc.pid}" in said[0] and "Traceback" not in loser.output.read_text()
        winner.wait_ready()
        assert winner.client is not None and winner.client.info.pid == winner.proc.pid
    finally:
        first.stop()
        second.stop()


def test_tokens_come_from_files_or_the_environment_never_argv(tmp_path: Path) -> None:
    from daemon_helpers import _cli

    out = _cli(tmp_path / "home", "serve", "--token", "0123456789abcdef0123", timeout=60)
    assert out.returncode == 2 and "--token" in out.stderr  # no such option: argv is readable by all users


def test_credentials_never_appear_in_messages(tmp_path: Path, cli: Any) -> None:
    """`error: Qdrant at http://admin:PassW0rd@127.0.0.1:16333: …` echoed the password."""
    result = cli("--qdrant-url", "http://admin:PassW0rd@127.0.0.1:9", "status", ok=False)
    assert result.exit_code == 1 and "127.0.0.1:9" in result.stderr, result.stderr
    assert "PassW0rd" not in result.stdout + result.stderr and "admin:" not in result.stderr


def test_daemon_survived_the_fuzzing(guarded: tuple[Daemon, Path, Path]) -> None:
    daemon, lib, _ = guarded
    assert daemon.proc.poll() is None
    assert daemon.client is not None and daemon.client.health()["state"] == "ready"
    # Still answers with the library as it was (the module's folders are shared: nothing is deleted here).
    assert _get(daemon, "/media", path=str(lib / "photos" / "a.png")) == 200
