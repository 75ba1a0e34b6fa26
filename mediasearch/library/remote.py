"""The library of a home that a daemon owns: the same use cases, answered by the daemon over HTTP.

The daemon holds the store (an embedded shard has one owner) and keeps the model warm, so a query is
fast. Only what needs no store — embedding and classifying files — loads a model in this process.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mediasearch.library.client import follow_progress
from mediasearch.library.people import RemotePeople
from mediasearch.library.types import DuplicateGroup, Explanation, Hit, IndexReport, PlaceCount, Status, TagReport
from mediasearch.library.wire import from_json
from mediasearch.settings import Settings

if TYPE_CHECKING:
    from mediasearch.index.options import IndexOptions, Progress
    from mediasearch.library.client import DaemonClient
    from mediasearch.library.text import FileText
    from mediasearch.search.query import Query


class RemoteLibrary(RemotePeople):
    """Use cases forwarded to the daemon that owns the home."""

    def __init__(self, settings: Settings, client: DaemonClient) -> None:
        self.settings = settings
        self.client = client
        self._model: Any = None

    @property
    def daemon(self) -> dict[str, Any] | None:
        return {"url": self.client.info.url, "pid": self.client.info.pid}

    def index_with(
        self, paths: Sequence[str], options: IndexOptions, *, tag: bool | None = None, progress: Progress | None = None
    ) -> IndexReport:
        request = {**dataclasses.asdict(options), "tag": self.settings.tagging if tag is None else tag}
        wanted = [os.path.abspath(p) for p in paths]
        if progress is None:
            return from_json(IndexReport, self.client.index(wanted, request, model=self.settings.model))
        done: dict[str, Any] = {}

        def run() -> None:
            try:
                done["report"] = self.client.index(wanted, request, model=self.settings.model)
            except BaseException as exc:  # handed to the caller's thread below
                done["error"] = exc

        worker = threading.Thread(target=run, name="daemon-index", daemon=True)
        worker.start()
        follow_progress(self.client, wanted, progress, worker)
        if "error" in done:
            raise done["error"]
        return from_json(IndexReport, done["report"])

    def forget(self, path: str) -> int:
        return int(self.client.forget(os.path.abspath(path))["files"])

    def search(self, query: Query) -> list[Hit]:
        return self.client.query(query, model=self.settings.model)

    def similar(self, path: str, query: Query) -> list[Hit]:
        """The daemon answers for indexed files only; a picture here that is not indexed is sent as an
        image query's bytes (the same ranking: the file is not among the hits either way)."""
        from mediasearch.errors import NotIndexedError
        from mediasearch.search.query import Term

        try:
            return self.client.similar(path, query, model=self.settings.model)
        except NotIndexedError:
            if not os.path.isfile(path):
                raise
        image = dataclasses.replace(query, terms=(Term("image", os.path.abspath(path)),))
        return self.client.query(image, model=self.settings.model)

    def explain(self, query: Query) -> Explanation:
        return self.client.explain(query, model=self.settings.model)

    def duplicates(self, paths: Sequence[str], threshold: float | None = None) -> list[DuplicateGroup]:
        rows = self.client.duplicates([os.path.abspath(p) for p in paths], threshold)
        return [from_json(DuplicateGroup, r) for r in rows]

    def text(self, path: str) -> FileText:
        """The daemon answers for indexed files; a file here that is not indexed is read in this process."""
        from mediasearch.errors import NotIndexedError
        from mediasearch.library.text import FileText, file_text

        try:
            return from_json(FileText, self.client.call("POST", "/text", {"path": os.path.abspath(path)}))
        except NotIndexedError:
            if not os.path.isfile(path):
                raise
        return file_text(None, os.path.abspath(path))

    def tag(self, vocab: str | None = None, prompts: str | None = None) -> TagReport:
        """A vocabulary file is read here and its labels sent: the daemon reads no file a request names
        (learned prompts excepted, from under its library roots)."""
        from mediasearch.search.vocabulary import load_vocabulary

        vocabulary = load_vocabulary(vocab) if vocab else None
        labels = dict(zip(vocabulary.labels, vocabulary.thresholds, strict=True)) if vocabulary else None
        return from_json(TagReport, self.client.tag(labels, prompts))

    def tags(self) -> dict[str, int]:
        return self.client.tags()

    def places(self) -> list[PlaceCount]:
        return [from_json(PlaceCount, row) for row in self.client.places()]

    def status(self) -> Status:
        return from_json(Status, self.client.status())

    def load_model(self) -> Any:
        """The settings' model, loaded here: embedding and classifying need no store, so no daemon."""
        from mediasearch.library import models

        if self._model is None:
            self._model = models.load(self.settings, models.spec_from_settings(self.settings))
        return self._model

    def close(self) -> None:
        self._model = None
