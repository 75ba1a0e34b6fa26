"""``mediasearch.Library``: the one use-case layer that the CLI, the HTTP API and Python users call.

``Library.open`` picks its backend: a :class:`~mediasearch.library.local.LocalLibrary` (this process
opens the store and loads the model; the daemon runs on one too) or, when a daemon owns the home, a
:class:`~mediasearch.library.remote.RemoteLibrary` that asks the daemon over HTTP. Either way the
methods and the dataclasses they return (``library.types``) are the same.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, overload

from mediasearch import queryspec
from mediasearch.errors import QueryError, StoreError
from mediasearch.library.base import Backend
from mediasearch.library.people import PeopleMethods
from mediasearch.library.types import (
    Classification,
    DuplicateGroup,
    Embedding,
    Explanation,
    FileError,
    Hit,
    IndexReport,
    LabelProb,
    PlaceCount,
    Status,
    TagReport,
)
from mediasearch.settings import Settings, load_settings

if TYPE_CHECKING:
    from mediasearch.clip.model import ClipModel
    from mediasearch.index.options import IndexOptions, Progress
    from mediasearch.library.text import FileText
    from mediasearch.search.query import Query

PathLike = str | os.PathLike[str]
OnError = Callable[[FileError], None]


class Library(PeopleMethods):
    """One home's index and model. Open with :meth:`open`; use as a context manager or call :meth:`close`."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    @property
    def settings(self) -> Settings:
        return self.backend.settings

    @staticmethod
    def open(
        home: PathLike | None = None,
        *,
        model: str | None = None,
        pretrained: str | None = None,
        device: str | None = None,
        qdrant_url: str | None = None,
        settings: Settings | None = None,
        use_daemon: bool = True,
    ) -> Library:
        """The home's library: through its daemon when one runs (it owns the store), else opened here.

        Settings not given come from the environment (``MEDIASEARCH_*``) and the home's config file.
        """
        if settings is None:
            given = {"home": home, "model": model, "pretrained": pretrained, "device": device, "qdrant_url": qdrant_url}
            settings = load_settings({k: v for k, v in given.items() if v is not None})
        if use_daemon:
            from mediasearch.library.client import find_daemon

            client = find_daemon(settings.home)
            if client is not None:
                from mediasearch.library.remote import RemoteLibrary

                return Library(RemoteLibrary(settings, client))
        from mediasearch.library.local import LocalLibrary

        return Library(LocalLibrary(settings))

    # -- life cycle -------------------------------------------------------------------------------

    def __enter__(self) -> Library:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the store and the model."""
        self.backend.close()

    @property
    def daemon(self) -> dict[str, Any] | None:
        """The daemon that answers for this library (url, pid); None when it runs in this process."""
        return self.backend.daemon

    # -- indexing ---------------------------------------------------------------------------------

    def index(
        self,
        paths: Sequence[PathLike],
        *,
        frame_interval: float | None = None,
        max_frames: int | None = None,
        batch_size: int | None = None,
        workers: int | None = None,
        hidden: bool = False,
        exact_times: bool = False,
        retry_failed: bool = False,
        tag: bool | None = None,
        progress: Progress | None = None,
        ray: bool = False,
        ray_address: str | None = None,
        ray_actors: int = 0,
    ) -> IndexReport:
        """Add, update and remove entries so that the index matches ``paths`` (folders or files).

        ``ray``: decode and encode on a Ray cluster (``ray_address``, or a local one; docs/scale.md).
        ``retry_failed``: decode again the files that failed before, though they are unchanged.
        """
        from mediasearch.index.options import IndexOptions

        s = self.settings
        options = IndexOptions(
            frame_interval if frame_interval is not None else s.frame_interval,
            max_frames if max_frames is not None else s.max_frames,
            batch_size if batch_size is not None else s.batch_size,
            workers if workers is not None else s.workers,
            hidden,
            exact_times=exact_times,
            retry_failed=retry_failed,
        )
        if ray or ray_address:
            local = self._local("index --ray")
            files = [os.fspath(p) for p in paths]
            ray_kwargs = {"address": ray_address, "actors": ray_actors}
            return local.index_on_ray(files, options, **ray_kwargs, tag=tag, progress=progress)
        return self.index_with([os.fspath(p) for p in paths], options, tag=tag, progress=progress)

    def create_store(
        self,
        *,
        shards: int = 1,
        replicas: int = 1,
        on_disk: bool = False,
        quantization: str = "none",
        float16: bool = False,
        bulk_load: bool = False,
    ) -> Any:
        """Create the model's collection on the Qdrant server (``qdrant_url``), laid out for a cluster."""
        from mediasearch.store.server import CollectionOptions

        options = CollectionOptions(shards, replicas, on_disk, quantization, float16, bulk_load)
        return self._local("store create").create_store(options)

    def migrate(self, to: str, *, batch: int = 256, on_page: Callable[[int], None] | None = None) -> Any:
        """Copy the index to ``to`` ("edge": this home's embedded store, or a server URL); resumable."""
        return self._local("store migrate").migrate(to, batch=batch, on_page=on_page)

    def _local(self, what: str) -> Any:
        from mediasearch.library.local import LocalLibrary

        if not isinstance(self.backend, LocalLibrary):
            url = (self.backend.daemon or {}).get("url", "a daemon")
            raise StoreError(f"{what} needs the store, which the daemon at {url} holds: stop it first")
        return self.backend

    def index_with(
        self, paths: Sequence[str], options: IndexOptions, *, tag: bool | None = None, progress: Progress | None = None
    ) -> IndexReport:
        """:meth:`index` with the options already assembled. Folders indexed on this machine become the
        home's library roots, which a daemon for the home may then serve and index (`library.roots`)."""
        from mediasearch.library import roots

        roots.record(self.settings.home, [os.path.abspath(p) for p in paths if os.path.exists(p)])
        return self.backend.index_with(paths, options, tag=tag, progress=progress)

    def forget(self, path: PathLike) -> int:
        """Drop a folder (or a file) and everything under it from the index; returns the files dropped."""
        return self.backend.forget(os.path.abspath(os.fspath(path)))

    # -- search -----------------------------------------------------------------------------------

    @overload
    def query(self, text: str | None = None, *, explain: Literal[False] = False, **fields: Any) -> list[Hit]: ...

    @overload
    def query(self, text: str | None = None, *, explain: Literal[True], **fields: Any) -> Explanation: ...

    def query(  # type: ignore[misc]  # the overloads pass the other fields through **fields
        self,
        text: str | None = None,
        *,
        image: PathLike | Sequence[PathLike] = (),
        also: Sequence[str] = (),
        negatives: Sequence[str] = (),
        not_image: Sequence[PathLike] = (),
        weight: float | None = None,
        raw: bool = False,
        literal: bool = False,
        explain: bool = False,
        limit: int = 10,
        min_score: float | None = None,
        sort: str = "score",
        kind: str | None = None,
        folder: PathLike | None = None,
        tags: Sequence[str] = (),
        after: str | float | None = None,
        before: str | float | None = None,
        near: str | tuple[float, float, float] | None = None,
        camera: str | None = None,
        place: str | None = None,
        person: Sequence[str] = (),
        ocr: Sequence[str] = (),
    ) -> list[Hit] | Explanation:
        """Items nearest to a text, example images, or both; ``negatives`` subtract. The fields are those of
        ``mediasearch/queryspec.py`` (``mediasearch query --help`` describes each).

        ``after``/``before`` take a date (``YYYY[-MM[-DD]]``) or a POSIX time; ``min_score`` cuts on the
        calibrated score (0..1); ``near`` (``"LAT,LON,KM"`` or a tuple) keeps photos taken within KM of
        the point (EXIF GPS); ``camera`` keeps those whose camera has every word of it; ``ocr`` those whose
        recognised text holds these words; ``person`` those in which all these people are; ``place``
        those taken there. Dates, a place and people written in ``text`` are read out of it unless
        ``literal``; ``explain`` returns that reading (an ``Explanation``) instead of searching.
        """
        from mediasearch.library.requests import query_of

        q = query_of(_spec_values(queryspec.QUERY_FIELDS, locals()))
        return self.backend.explain(q) if explain else self.search(q)

    def search(self, query: Query) -> list[Hit]:
        """:meth:`query` with the query already assembled (weighted terms, filters)."""
        return self.backend.search(query)

    def similar(
        self,
        path: PathLike,
        *,
        limit: int = 10,
        sort: str = "score",
        kind: str | None = None,
        folder: PathLike | None = None,
        tags: Sequence[str] = (),
        after: str | float | None = None,
        before: str | float | None = None,
        near: str | tuple[float, float, float] | None = None,
        camera: str | None = None,
        place: str | None = None,
        person: Sequence[str] = (),
        ocr: Sequence[str] = (),
    ) -> list[Hit]:
        """Items that look like ``path`` (an indexed file, or any image or video), with :meth:`query`'s filters."""
        from mediasearch.library.requests import query_of

        values = _spec_values(queryspec.SIMILAR_FIELDS, locals())
        return self.backend.similar(os.fspath(path), query_of(values, similar=True))

    def duplicates(self, paths: Sequence[PathLike] = (), *, threshold: float | None = None) -> list[DuplicateGroup]:
        """Groups of copies among the indexed files under ``paths`` (everything when empty), largest first.

        Byte-identical files form ``"exact"`` groups; resized, slightly cropped or re-encoded copies
        ``"near"`` ones, verified on pixels (``threshold``: the pixel similarity a copy needs, default 0.95).
        """
        return self.backend.duplicates([os.path.abspath(os.fspath(p)) for p in paths], threshold)

    def text(self, path: PathLike) -> FileText:
        """What is written in a picture or a video's frames: lines with confidence, box and time (OCR).
        An indexed file answers from the index once its OCR pass is done; any other file is read now."""
        return self.backend.text(os.path.abspath(os.fspath(path)))

    # -- tags and status --------------------------------------------------------------------------

    def tag(self, vocab: PathLike | None = None, prompts: PathLike | None = None) -> TagReport:
        """Tag everything indexed (zero-shot); items indexed later are tagged with the same vocabulary."""
        return self.backend.tag(os.fspath(vocab) if vocab else None, os.fspath(prompts) if prompts else None)

    def tags(self) -> dict[str, int]:
        """The tags in the index, with how many files carry each."""
        return self.backend.tags()

    def places(self) -> list[PlaceCount]:
        """The cities where geotagged files were taken (with region and country), most files first."""
        return self.backend.places()

    def status(self) -> Status:
        """What is indexed, by which model, where, the last run and its failures."""
        return self.backend.status()

    # -- the model alone (no store): the same for a local and a daemon-backed library -------------

    def load_model(self) -> ClipModel:
        """The settings' model, loaded once (for embedding, classifying, fine-tuning, evaluation)."""
        return self.backend.load_model()

    def embed_texts(self, texts: Sequence[str]) -> list[Embedding]:
        """L2-normalised embeddings of ``texts``."""
        if not texts:
            return []
        vectors = self.load_model().encode_texts(list(texts))
        return [Embedding(v.tolist(), text=t) for t, v in zip(texts, vectors, strict=True)]

    def embed_images(self, files: Sequence[PathLike], *, on_error: OnError | None = None) -> list[Embedding]:
        """L2-normalised embeddings of images (a video: the mean of its sampled frames)."""
        done = self._encode(files, on_error)
        return [Embedding(v.tolist(), path=p) for p, v in done]

    def classify(
        self,
        files: Sequence[PathLike],
        labels: Sequence[str] | None = None,
        *,
        prompts: PathLike | None = None,
        on_error: OnError | None = None,
    ) -> list[Classification]:
        """Zero-shot probabilities of ``labels`` for each file, most probable first.

        Without labels: a fine-tuned checkpoint's linear head, or the classes of learned ``prompts``.
        A file that cannot be read goes to ``on_error`` (without one, it raises).
        """
        from mediasearch.library.models import classify_embeddings_of

        chosen = list(dict.fromkeys(lab.strip() for lab in labels or () if lab.strip()))
        if labels is not None and prompts is None and len(chosen) < 2:
            raise QueryError("--labels needs at least two labels, comma-separated")
        model = self.load_model()
        if not chosen and prompts is None and model.head is None:
            raise QueryError("--labels is required: this model has no linear head (`finetune --head linear` adds one)")
        done = self._encode(files, on_error)
        if not done:
            return []
        rows = classify_embeddings_of(model, [v for _, v in done], chosen, os.fspath(prompts) if prompts else None)
        return [
            Classification(p, [LabelProb(s.label, round(s.prob, 4)) for s in row])
            for (p, _), row in zip(done, rows, strict=True)
        ]

    def _encode(self, files: Sequence[PathLike], on_error: OnError | None) -> list[tuple[str, Any]]:
        from mediasearch.library.models import encode_each

        done, errors = encode_each(self.load_model(), [os.fspath(f) for f in files])
        for err in errors:
            if on_error is None:
                raise QueryError(f"{err['path']}: {err['error']}")
            on_error(FileError(err["path"], err["error"]))
        return done


def _spec_values(fields: tuple[queryspec.QueryField, ...], given: dict[str, Any]) -> dict[str, Any]:
    """The keywords a method was called with, by the specification's names: paths as strings, lists as tuples."""
    values = {}
    for field in fields:
        value = given[field.name]
        if field.repeatable:
            many = [value] if isinstance(value, str | os.PathLike) else list(value)
            value = tuple(os.fspath(v) if field.kind == queryspec.PATH else v for v in many)
        elif field.kind == queryspec.PATH and value is not None:
            value = os.fspath(value)
        values[field.name] = value
    return values
