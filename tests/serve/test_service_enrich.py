"""The daemon runs the enrichers in the background after its CLIP pass: searches answer meanwhile,
/status shows the progress, and an index request goes first (the pass gives way, then goes on)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fault_helpers import wait_until

from mediasearch.index import enrichers
from mediasearch.index.enrich import FileInput, drop_fields
from mediasearch.lab.shapes import render, save_image
from mediasearch.library.requests import IndexOptions, Query, Term
from mediasearch.serve.options import DaemonOptions
from mediasearch.serve.service import Service
from mediasearch.settings import Settings
from mediasearch.store.base import Store


class GatedReader:
    """A pixel enricher that waits at the gate before its second file (to look at the daemon meanwhile)."""

    name, version, reads, max_side, fields = "ocr", 1, "pixels", 32, ("ocr_text",)

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.waiting = threading.Event()
        self.seen: list[str] = []

    def run(self, item: FileInput, store: Store) -> dict[str, dict[str, Any]]:
        if len(self.seen) == 1:
            self.waiting.set()
            assert self.gate.wait(60)
        self.seen.append(Path(item.path).name)
        return {f.point_id: {"ocr_text": Path(item.path).stem} for f in item.frames}

    def drop(self, store: Store) -> None:
        drop_fields(store, self)

    def forget(self, point_ids: Sequence[str], store: Store) -> None:
        pass


@pytest.fixture
def reader(monkeypatch: pytest.MonkeyPatch) -> Iterator[GatedReader]:
    plugged = GatedReader()
    real = enrichers.installed  # the metadata enricher, and this one in place of OCR, faces and places
    monkeypatch.setattr(enrichers, "installed", lambda s: [*(e for e in real(s) if e.name == "metadata"), plugged])
    yield plugged
    plugged.gate.set()


def photos(folder: Path, names: Sequence[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        colour, shape = name.split("_")
        save_image(render(colour, shape, rng=rng, size=(96, 96)), folder / f"{name}.png", "png")


def test_the_daemon_enriches_in_the_background_and_gives_way_to_an_index_request(
    tmp_path: Path, demo_settings: Callable[..., Settings], demo_model: Any, reader: GatedReader
) -> None:
    library = tmp_path / "photos"
    photos(library, ["red_circle", "blue_star", "green_square"])
    options = DaemonOptions(roots=(str(library),), rescan_every=0, debounce=0.1)
    service = Service(demo_settings(), options, logging.getLogger("test-service-enrich"))
    try:
        service.start()
        assert reader.waiting.wait(120), "the enrichment pass did not start after the first rescan"
        # The pass holds its second file: searches answer, and /status says how far it is.
        hits = service.query(Query(terms=(Term("text", "a red circle"),), limit=3))
        assert hits[0]["path"].endswith("red_circle.png")
        status = service.status()
        assert status["daemon"]["enriching"] == {"files": 3, "done": 1, "waiting": 0}
        assert status["files"] == 3

        more = library / "more"  # under the daemon's root: the daemon serves its roots alone
        photos(more, ["yellow_triangle"])
        threading.Timer(1.0, reader.gate.set).start()  # once the request below is queued
        report = service.index([str(more)], IndexOptions())
        assert report["added"] == 1 and report["enriched"] == {}  # the CLIP pass alone: enrichers follow
        wait_until(lambda: service.status()["enrichers"].get("ocr", {}).get("done") == 4, 120, "the pass")
        status = service.status()
        assert status["enrichers"]["ocr"] == {"done": 4, "pending": 0}
        assert status["enrichers"]["metadata"] == {"done": 4, "pending": 0}
        assert status["daemon"]["enriching"] is None
        assert sorted(reader.seen) == ["blue_star.png", "green_square.png", "red_circle.png", "yellow_triangle.png"]
    finally:
        reader.gate.set()
        service.stop()
