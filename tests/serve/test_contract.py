"""The HTTP contract: schemathesis, with every check it has, finds nothing against a real daemon.

The real schemathesis command line runs against `mediasearch serve` on a small library, from the
daemon's own /openapi.json, with a fixed seed and a modest number of examples: responses match their
declared status codes and schemas (the error model included), valid requests are accepted, invalid
ones refused, methods the spec does not list answer 405 with an ``Allow`` header, and a request
without the token answers 401. POST /index is fuzzed too: a path outside the library roots is refused
(403), so no request walks the machine's folders.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from served_library import Served, env, served_library

pytestmark = pytest.mark.faults

SEED = 20261201
EXAMPLES = 10  # per operation and phase: about 700 requests, under a minute on 2 cores
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with served_library(tmp_path_factory.mktemp("contract")) as daemon:
        yield daemon


def schemathesis(served: Served, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``schemathesis run --checks all`` against the daemon, with the hooks that make pictures for image terms."""
    extra = {"SCHEMATHESIS_HOOKS": "schemathesis_hooks", "PYTHONPATH": f"{HERE}:{env().get('PYTHONPATH', '')}"}
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", f"{served.url}/openapi.json", "--checks", "all",
        "--seed", str(SEED), "--max-examples", str(EXAMPLES), "--workers", "1", "--generation-database", "none",
        "--header", f"X-Mediasearch-Token: {served.token}", "--request-timeout", "60",
        # No timed assertion: `--checks all` gives each answer 10 s, which a query with a 20 MB picture
        # can pass on a loaded machine; the request timeout (60 s) still catches a hang.
        "--max-response-time", "60", *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, env={**env(), **extra}, cwd=cwd, timeout=600)


def test_schemathesis_checks_all_find_nothing(served: Served, tmp_path: Path) -> None:
    run = schemathesis(served, cwd=tmp_path)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:]
    counts = re.search(r"(\d+) generated, (\d+) passed", output)
    assert counts, output[-3000:]
    generated, passed = map(int, counts.groups())
    print(f"\nschemathesis --checks all, seed {SEED}: {generated} generated, {passed} passed")
    assert generated == passed and generated >= 300
    selected = re.search(r"Selected: (\d+)/(\d+)", output)
    tested = re.search(r"Tested: (\d+)", output)
    assert selected and tested, output[-3000:]
    # Every operation, POST /index included (paths outside the roots: 403).
    assert int(tested.group(1)) == int(selected.group(1)) == int(selected.group(2)) >= 12
    assert served.alive()


def _post(served: Served, route: str, body: Any, token: str | None = "") -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["X-Mediasearch-Token"] = token or served.token
    request = urllib.request.Request(f"{served.url}{route}", json.dumps(body).encode(), headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("/index", {"paths": ["/nonexistent-root"], "watch": 0}),  # no boolean from 0
        ("/index", {"paths": ["/nonexistent-root"], "include_hidden": "true"}),
        ("/index", {"paths": ["/nonexistent-root"], "max_frames": "600"}),
        ("/index", {"paths": []}),
        ("/index", {"paths": [""]}),
        ("/query", {}),  # a query needs a text or a term
        ("/query", {"terms": [{"value": "a red circle", "weight": -1}]}),  # ... with a positive weight
        ("/query", {"terms": [{"value": "a red circle", "weight": 1e-300}]}),  # (too light to normalise)
        ("/query", {"terms": [{"kind": "text", "value": "a red circle", "data": "iVBORw0KGgo="}]}),
        ("/query", {"terms": [{"kind": "image"}]}),  # an image term needs a file or data
        ("/query", {"text": "a red circle", "raw": 1}),
        ("/query", {"text": "a red circle", "after": "2024-02-30"}),
        ("/similar", {"path": ""}),  # paths are non-empty
        ("/tag", {"labels": ["a cat"], "prompts": "/b.safetensors"}),  # a vocabulary or prompts, not both
        ("/tag", {"vocab": "/etc/passwd"}),  # a vocabulary is sent, never read from a path
        ("/query", {"terms": [{"value": "a"}] * 33}),  # at most 32 terms
        ("/index", {"paths": ["/nonexistent-root"], "max_frames": 10_001}),  # at most 10,000 frames a video
    ],
)
def test_refused_by_the_schema_with_the_error_model(served: Served, route: str, body: dict[str, Any]) -> None:
    status, answer = _post(served, route, body)
    assert status == 422, answer
    assert answer["kind"] == "ValidationError" and answer["error"] and answer["detail"]


def test_the_spec_declares_every_status_with_the_error_model(served: Served) -> None:
    spec = json.loads(urllib.request.urlopen(f"{served.url}/openapi.json", timeout=30).read())
    error = {"$ref": "#/components/schemas/Error"}
    for route, declared in [("/query", "post"), ("/similar", "post"), ("/status", "get"), ("/index", "post"),
                            ("/forget", "post"), ("/tag", "post"), ("/tags", "get"), ("/places", "get")]:
        responses = spec["paths"][route][declared]["responses"]
        assert responses["200"]["content"]["application/json"]["schema"], route  # a typed answer
        for code in set(responses) - {"200"}:
            assert responses[code]["content"]["application/json"]["schema"] == error, (route, code)
    assert {"400", "404", "409", "422", "503", "401"} <= set(spec["paths"]["/query"]["post"]["responses"])
    status = spec["paths"]["/status"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert status == {"$ref": "#/components/schemas/Status"}


def test_errors_answer_in_the_error_model(served: Served) -> None:
    status, answer = _post(served, "/query", {"text": "a red circle"}, token="not-the-token")
    assert status == 401 and answer == {"error": answer["error"], "kind": "Unauthorized"}
    status, answer = _post(served, "/similar", {"path": "/nonexistent/picture.png"})
    assert status == 404 and answer["kind"] == "NotIndexedError", answer
    status, answer = _post(served, "/query", {"terms": [{"kind": "image", "value": "/nonexistent/x.png"}]})
    assert status == 404, answer
    status, answer = _post(served, "/query", {"text": "a red circle", "model": "ViT-B-32"})
    assert status == 409 and answer["kind"] == "ModelMismatchError", answer
