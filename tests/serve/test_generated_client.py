"""A client generated from the daemon's live spec (openapi-python-client) indexes, queries, reads the status
as a typed object, and forgets; an error comes back as the typed error model."""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from daemon_helpers import photos
from served_library import Served, env, served_library

from mediasearch.library import roots

pytest.importorskip("openapi_python_client", reason="the test extra installs openapi-python-client")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with served_library(tmp_path_factory.mktemp("generated")) as daemon:
        yield daemon


@pytest.fixture(scope="module")
def generated(served: Served, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The package openapi-python-client writes from ``/openapi.json``, imported."""
    out = tmp_path_factory.mktemp("client") / "mediasearch_client"
    command = [sys.executable, "-m", "openapi_python_client", "generate", "--url", f"{served.url}/openapi.json",
               "--meta", "none", "--output-path", str(out)]
    run = subprocess.run(command, capture_output=True, text=True, env=env(), timeout=120, check=False)
    assert run.returncode == 0 and (out / "models" / "status.py").is_file(), run.stdout + run.stderr
    sys.path.insert(0, str(out.parent))
    try:
        yield importlib.import_module("mediasearch_client")
    finally:
        sys.path.remove(str(out.parent))
        for name in [m for m in sys.modules if m == "mediasearch_client" or m.startswith("mediasearch_client.")]:
            del sys.modules[name]


def test_generated_client_indexes_queries_reads_status_and_forgets(served: Served, generated: Any) -> None:
    from mediasearch_client import AuthenticatedClient
    from mediasearch_client.api.daemon import status
    from mediasearch_client.api.index import forget, index
    from mediasearch_client.api.search import query
    from mediasearch_client.models import (
        ForgetReport,
        ForgetRequest,
        Hit,
        IndexReport,
        IndexRequest,
        QueryRequest,
        Status,
        Term,
    )

    extra = served.lib.parent / "extra"
    added = photos(extra, [("orange", "triangle"), ("orange", "triangle")], seed=9)
    roots.record(served.home, [str(extra)])  # a library root, as `mediasearch index` on the machine makes it
    client = AuthenticatedClient(base_url=served.url, token=served.token, timeout=300.0)

    report = index.sync(client=client, body=IndexRequest(paths=[str(extra)]))
    assert isinstance(report, IndexReport) and report.added == 2 and report.failed == 0, report

    hits = query.sync(client=client, body=QueryRequest(terms=[Term(value="an orange triangle")], limit=2))
    assert isinstance(hits, list) and all(isinstance(h, Hit) for h in hits)
    assert {h.path for h in hits} == {str(p) for p in added}, hits

    state = status.sync(client=client)
    assert isinstance(state, Status), state
    assert state.files == 8 and state.images == 8 and state.home == str(served.home)
    assert state.model is not None and state.model.additional_properties["name"] == "demo"

    gone = forget.sync(client=client, body=ForgetRequest(path=str(extra)))
    assert isinstance(gone, ForgetReport) and gone.files == 2 and gone.path == str(extra)
    after = status.sync(client=client)
    assert isinstance(after, Status) and after.files == 6


def test_generated_client_gets_the_error_model(served: Served, generated: Any) -> None:
    from mediasearch_client import AuthenticatedClient, Client
    from mediasearch_client.api.daemon import status
    from mediasearch_client.api.search import similar
    from mediasearch_client.models import Error, SimilarRequest

    client = AuthenticatedClient(base_url=served.url, token=served.token, timeout=60.0)
    missing = similar.sync(client=client, body=SimilarRequest(path="/nonexistent/picture.png"))
    assert isinstance(missing, Error) and missing.kind == "NotIndexedError", missing
    refused = status.sync_detailed(client=AuthenticatedClient(base_url=served.url, token="wrong-token-123456"))
    assert refused.status_code == 401 and isinstance(refused.parsed, Error) and refused.parsed.kind == "Unauthorized"
    assert isinstance(Client, type)
