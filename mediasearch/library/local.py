"""The library opened in this process: it holds the store (one owner at a time) and loads the model.

Two sides, opened when first needed: the *index side* (the settings' model and its collection, created
if new) and the *query side* (the collection queries use, with the model that built it). They are one
and the same unless a new model's collection is being built; then queries stay on the old collection
until a run of the new one completes (:meth:`LocalLibrary.complete`). The daemon builds one of these
with both sides already open and calls the same use cases as everyone else.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from mediasearch.library import home, models, search_graph
from mediasearch.library.people import LocalPeople
from mediasearch.library.types import DuplicateGroup, Explanation, Hit, IndexReport, PlaceCount, Status, TagReport
from mediasearch.settings import Settings

if TYPE_CHECKING:
    from mediasearch.index.options import IndexOptions, Progress
    from mediasearch.index.plan import StoredFile
    from mediasearch.library.text import FileText
    from mediasearch.search.query import Query
    from mediasearch.search.vocabulary import Vocabulary
    from mediasearch.store.base import Store

SEARCH_INDEX_KEY = "search_index"  # collection meta: the HNSW build that last completed


class LocalLibrary(LocalPeople):
    """Use cases over a store this process holds."""

    def __init__(
        self,
        settings: Settings,
        *,
        index_side: home.Opened | None = None,
        query_side: home.Opened | None = None,
    ) -> None:
        self.settings = settings
        self._index = index_side
        self._query = query_side
        self._model: Any = None

    # -- sides ------------------------------------------------------------------------------------

    @property
    def index_side(self) -> home.Opened:
        """The settings' model's collection (opened, and created if new, on first use). Its model is
        loaded only when needed (:meth:`_index_model`): planning a run needs the store alone."""
        if self._index is None:
            self._close_query()  # the index side may open the same shard: one handle per process
            self.settings = home.index_settings(self.settings)  # without --model: the home's model
            self._index = home.open_for_index(self.settings, need_model=False)
            if not self._index.activate_when_done:
                self._query = self._index
        return self._index

    def _index_model(self) -> Any:
        """The index side's model, loaded on first use."""
        opened = self.index_side
        if opened.model is None:  # exactly the settings' model: the collection is named after it
            opened.model = models.load(self.settings, models.spec_from_settings(self.settings))
        return opened.model

    @property
    def query_side(self) -> home.Opened:
        """The collection queries use, with a full model."""
        opened = self._query_opened(text_only=False)
        if not hasattr(opened.model, "transform"):  # opened for text only: the image tower is needed now
            opened.model = models.load(self.settings, opened.model.spec)
        return opened

    def _query_opened(self, *, text_only: bool) -> home.Opened:
        if self._query is not None and self._query.model is None:  # opened for its store alone
            if self._query is self._index:
                self._index_model()
            else:
                self._close_query()
        if self._query is None:
            if self._index is not None and not self._index.activate_when_done:
                self._index_model()
                self._query = self._index
            else:
                self._query = home.open_for_query(self.settings, text_only=text_only)
        return self._query

    def _store_only(self) -> Store:
        """The query collection's store, without loading any model."""
        if self._query is None and (self._index is None or self._index.activate_when_done):
            self._query = home.open_for_query(self.settings, need_model=False)
        return (self._query or self._index).store  # type: ignore[union-attr]

    def _close_query(self) -> None:
        if self._query is not None and self._query is not self._index:
            self._query.close()
        self._query = None

    def close(self) -> None:
        self.close_people()
        self._close_query()
        if self._index is not None:
            self._index.close()
            self._index = None
        self._model = None

    @property
    def daemon(self) -> dict[str, Any] | None:
        return None

    def load_model(self) -> Any:
        """The settings' model: the one an open side holds when it is that model, else loaded once."""
        for side in (self._index, self._query):
            if side is not None and side.model is not None and hasattr(side.model, "transform"):
                if side.model.spec == models.spec_from_settings(self.settings) or self.settings.model is None:
                    return side.model
        if self._model is None:
            self._model = models.load(self.settings, models.spec_from_settings(self.settings))
        return self._model

    # -- indexing ---------------------------------------------------------------------------------

    def index_with(
        self,
        paths: Sequence[str],
        options: IndexOptions,
        *,
        tag: bool | None = None,
        progress: Progress | None = None,
        store: Store | None = None,
    ) -> IndexReport:
        """Index ``paths``, then :meth:`complete` the run. ``store`` wraps the side's store (the daemon's
        cancellation guard)."""
        report = self.run_index(paths, options, tag=tag, progress=progress, store=store)
        self.complete(report)
        return report

    def run_index(
        self,
        paths: Sequence[str],
        options: IndexOptions,
        *,
        tag: bool | None = None,
        progress: Progress | None = None,
        store: Store | None = None,
        enrich: bool = True,
    ) -> IndexReport:
        """One index run, without recording it (see :meth:`complete`); ``enrich=False`` leaves the
        enrichment pass (:meth:`enrich`) to the caller (the daemon runs it in the background)."""
        from mediasearch.index.failures import FailureLog
        from mediasearch.index.mounts import MountLog
        from mediasearch.index.runner import index_paths

        opened = self.index_side
        settings = replace(self.settings, tagging=tag) if tag is not None else self.settings

        def load_model() -> tuple[Any, Any]:  # only when the plan has something to encode
            self._index_model()
            return opened.model, models.index_tagger(settings, opened.store, opened.model)

        own = home.own_folders(self.settings)  # a home inside a root: never its thumbnails
        target = store or opened.store
        failures, mounts = FailureLog(home.failures_path(self.settings)), MountLog(home.mounts_path(self.settings))
        summary = index_paths(
            list(paths), None, target, options, progress, load_model=load_model, exclude=own, failures=failures,
            mounts=mounts,
        )
        if enrich:
            self.enrich(paths, summary, progress=progress, store=target, workers=options.workers)
        return summary

    def enrich(
        self,
        paths: Sequence[str],
        summary: IndexReport,
        *,
        progress: Progress | None = None,
        store: Store | None = None,
        workers: int = 0,
        stop: Callable[[], bool] | None = None,
    ) -> IndexReport:
        """The enrichment pass over ``paths`` (after their CLIP pass): every enabled enricher on the points
        that lack its current version; an enricher turned off since the last pass has its data deleted."""
        from mediasearch.index import enrichers
        from mediasearch.index.enrich import enrich, sync_enabled

        target = store or self.index_side.store
        installed = enrichers.installed(self.settings)
        on = [e for e in installed if enrichers.is_on(self.settings, e.name)]
        sync_enabled(target, on, installed)
        present = [p for p in paths if os.path.exists(p)]  # an unmounted root waits, as the plan does
        enrich(target, present, on, summary, progress, workers=workers, stop=stop)
        if summary.removed or summary.moved or summary.updated:
            _tidy(on, target)  # side data (faces) of points that went or moved
        return summary

    def enrichment_progress(self) -> dict[str, dict[str, int]]:
        """Per enabled enricher, the index side's points done and pending (a scroll of every point)."""
        from mediasearch.index import enrichers

        return home.scan_store(self.index_side.store, enrichers.enabled(self.settings))[1]

    def complete(self, report: IndexReport) -> bool:
        """Record a finished run; a new model's collection becomes the one queries use. True when it did."""
        opened = self.index_side
        switching = opened.activate_when_done
        home.finish_index(self.settings, opened, report.to_json())
        if switching:
            self._close_query()
            self._query = opened
            opened.activate_when_done = False
        return switching

    def index_on_ray(
        self,
        paths: Sequence[str],
        options: IndexOptions,
        *,
        address: str | None = None,
        actors: int = 0,
        tag: bool | None = None,
        progress: Progress | None = None,
    ) -> IndexReport:
        """:meth:`index_with`, decoding and encoding on a Ray cluster (``library.scale``)."""
        from mediasearch.library import scale

        self._index_model()  # the driver's tagger and the collection's dimension need it (Ray loads its own)
        report = scale.index_on_ray(
            self.settings, self.index_side, paths, options, address=address, actors=actors, tag=tag, progress=progress
        )
        self.enrich(paths, report, progress=progress, workers=options.workers)  # on the driver, as Ray needs no model
        self.complete(report)
        return report

    def create_store(self, options: Any) -> Any:
        """Create the settings' model's collection on a server, laid out by ``options`` (a StoreCreated)."""
        from mediasearch.library import scale

        model = self.load_model()
        collection = scale.create_store(self.settings, model, options)
        opened = self.index_side  # records the model, and makes it active when nothing else is
        if options.bulk_load:
            opened.store.set_bulk_load(True)  # type: ignore[attr-defined]  # a QdrantStore
        fields = ("shards", "replicas", "on_disk", "quantization", "float16", "bulk_load")
        return scale.StoreCreated(
            collection, opened.store.location, model.dim, **{f: getattr(options, f) for f in fields}
        )

    def migrate(self, to: str, *, batch: int = 256, on_page: Any = None) -> Any:
        """Copy the index to ``to`` ("edge" or a server URL), resumably (a ``scale.Migration``)."""
        from mediasearch.library import scale

        self.close()  # the stores are opened by the copy, one owner at a time
        return scale.migrate(self.settings, to, batch=batch, on_page=on_page)

    def forget(self, path: str) -> int:
        """Drop ``path`` (a folder or a file) from every collection; the number of files dropped."""
        from mediasearch.index import enrichers
        from mediasearch.index.mounts import MountLog
        from mediasearch.index.plan import forget as forget_folder

        target = os.path.abspath(path)
        mounts = MountLog(home.mounts_path(self.settings))
        mounts.forget(target)  # a mount point gone for good: no longer protected
        mounts.save()
        dropped = max((forget_folder(store, target) for store in self.every_collection()), default=0)
        if dropped and self._has_index():
            _tidy(enrichers.enabled(self.settings), self._store_only())
        return dropped

    def every_collection(self) -> Iterator[Store]:
        """Each collection of the home (one per model it was indexed with), the open ones reused."""
        from mediasearch.store.collections import list_collections, open_store

        kwargs = home.store_kwargs(self.settings)
        ours = {o.collection: o.store for o in (self._index, self._query) if o is not None}
        for name in list_collections(**kwargs):
            if name in ours:
                yield ours[name]
            else:
                with open_store(collection=name, dim=None, create=False, **kwargs) as store:
                    yield store

    def snapshot(self, paths: Sequence[str]) -> dict[str, StoredFile]:
        """What the index side holds under each path (a folder, or one file): to log what a run changed."""
        from mediasearch.index.plan import stored_under

        return stored_under(self.index_side.store, paths)

    def point_count(self) -> int:
        """Points (images and video frames) in the index side's collection."""
        return self.index_side.store.count()

    def build_search_index(self, cancel: Any) -> int | None:
        """Build the collection's HNSW graph in a child process (the store is closed meanwhile: hold off
        every other use of this library until it returns). The child's exit code; a build that
        succeeded is recorded in the collection's meta (see :meth:`search_index_built`). StoreError when
        the store cannot be opened again afterwards (then :meth:`reopen_index_store` may be retried)."""
        opened = self.index_side
        points = opened.store.count()
        opened.store.close()
        try:
            code = search_graph.optimize_in_child(self.settings, opened.collection, cancel)
        finally:
            self.reopen_index_store()
        if code == 0:
            from mediasearch.store.base import GRAPH_SETTINGS

            built = {"points": points, "graph": GRAPH_SETTINGS}
            opened.store.set_meta({**(opened.store.get_meta() or {}), SEARCH_INDEX_KEY: built})
        return code

    def reopen_index_store(self, wait_s: float = 60.0) -> None:
        """Open the index side's store again after :meth:`build_search_index` closed it."""
        opened = self.index_side
        opened.store = search_graph.reopen_store(self.settings, opened.collection, wait_s)

    def search_index_built(self) -> int | None:
        """How many points the index side's collection held when its HNSW graph was last built, or None
        if it never was (a store built by `mediasearch index` alone) or was built with other graph
        settings than today's (the next build brings it up to date)."""
        from mediasearch.store.base import GRAPH_SETTINGS

        record = (self.index_side.store.get_meta() or {}).get(SEARCH_INDEX_KEY)
        if not isinstance(record, dict) or "points" not in record or record.get("graph") != GRAPH_SETTINGS:
            return None
        return int(record["points"])

    def query_counts(self) -> home.Counts:
        """Files, images, videos and frames of the collection queries use, counted (a full scroll)."""
        if not self._has_index():
            return home.Counts()
        return home.count_store(self._store_only())

    # -- search -----------------------------------------------------------------------------------

    def search(self, query: Query) -> list[Hit]:
        from mediasearch.library.resolve import resolve
        from mediasearch.search.query import search

        query = resolve(self, query)
        opened = self._query_opened(text_only=all(t.kind == "text" for t in query.terms))
        if any(t.kind == "image" for t in query.terms):
            opened = self.query_side
        return self.name_hits(search(opened.store, opened.model, query))

    def similar(self, path: str, query: Query) -> list[Hit]:
        """Items that look like ``path`` (indexed or not), with the filters of ``query``."""
        from mediasearch.library.resolve import resolve
        from mediasearch.search.query import search_vector, similar_vector

        query = resolve(self, query)
        opened = self.query_side
        vec, own = similar_vector(opened.store, opened.model, path)
        return self.name_hits(search_vector(opened.store, opened.model, vec, query, exclude_ids=own))

    def place_names(self) -> list[str]:
        """The folded names of the places the indexed files were taken in (for the one-line parse)."""
        from mediasearch.search.places import place_names

        return place_names(self._store_only()) if self._has_index() else []

    def explain(self, query: Query) -> Explanation:
        """How the query's text is read (dates, place, people...), with its explicit fields winning."""
        from mediasearch.library.resolve import explain

        return explain(self, query)

    def duplicates(self, paths: Sequence[str], threshold: float | None = None) -> list[DuplicateGroup]:
        """Groups of exact and near copies among the indexed files under ``paths`` (all when empty).

        Works on the stored vectors and the files' pixels: no model is loaded."""
        from mediasearch.search.duplicates import DEFAULT_THRESHOLD, find_duplicates

        chosen = DEFAULT_THRESHOLD if threshold is None else threshold
        groups = find_duplicates(self._store_only(), [os.path.abspath(p) for p in paths], threshold=chosen)
        return [DuplicateGroup(g.paths, g.similarity, g.kind) for g in groups]

    # -- tags and status --------------------------------------------------------------------------

    def text(self, path: str) -> FileText:
        from mediasearch.library.text import file_text

        return file_text(self._store_only() if self._has_index() else None, path)

    def tag(
        self, vocab: str | None = None, prompts: str | None = None, *, vocabulary: Vocabulary | None = None
    ) -> TagReport:
        """Tag everything in the query collection and remember the vocabulary for items indexed later;
        ``vocabulary`` (labels already read, as the daemon receives them) instead of a file."""
        from mediasearch.search.tagging import Tagger, tag_store
        from mediasearch.search.vocabulary import choose_vocabulary

        opened = self.query_side
        # Without a file, the vocabulary that suits the model.
        if vocabulary is None or prompts is not None:
            vocabulary = choose_vocabulary(opened.model, vocab, prompts)
        result = tag_store(opened.store, Tagger(opened.model, vocabulary))
        opened.store.set_meta({**(opened.store.get_meta() or {}), "tagging": vocabulary.to_json()})
        return TagReport(**result)

    def tags(self) -> dict[str, int]:
        from mediasearch.search.tagging import tag_counts

        return tag_counts(self._store_only())

    def places(self) -> list[PlaceCount]:
        from mediasearch.search.places import place_counts

        return [PlaceCount(*row) for row in place_counts(self._store_only())]

    def status(self, counts: home.Counts | None = None) -> Status:
        """What is indexed; ``counts`` (of the query collection), when the caller keeps them current,
        spare a scroll of every point."""
        if not self._has_index():
            return Status(**home.empty_status(self.settings))
        side = self._query if self._query is not None else self._index
        if side is None or side.activate_when_done:
            self._store_only()
            side = self._query
        assert side is not None
        return Status(**home.store_status(self.settings, side, counts))

    def indexed_record(self, path: str) -> dict[str, Any] | None:
        """The stored payload of the indexed file shown as ``path`` (its first point), or None."""
        from mediasearch.store.base import Filter

        fields = ("path", "path_raw", "kind", "size", "fingerprint")
        record = next(iter(self._store_only().scroll(Filter(path=path), fields=fields)), None)
        return None if record is None else dict(record.payload)

    def model_name(self) -> str | None:
        """The name of the model queries use (as loaded), or None before anything is open."""
        side = self._query or self._index
        return None if side is None or side.model is None else str(side.model.spec.name)

    def _has_index(self) -> bool:
        from mediasearch.store.collections import active_collection

        if self._query is not None or (self._index is not None and not self._index.activate_when_done):
            return True
        return active_collection(**home.store_kwargs(self.settings)) is not None


def _tidy(enrichers: Sequence[Any], store: Store) -> None:
    """Let the enrichers that keep data beside the points (faces) follow points removed or moved."""
    for enricher in enrichers:
        tidy = getattr(enricher, "tidy", None)
        if tidy is not None:
            tidy(store)
