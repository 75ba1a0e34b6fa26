"""A Qdrant server or cluster (``--qdrant-url``), or qdrant-client's in-process mode for tests: the same
``Store`` interface as the embedded shard, collections named the same way, the active one behind an alias.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mediasearch.errors import StoreError, redact, redact_url
from mediasearch.store.base import (
    HNSW_EF_CONSTRUCT,
    HNSW_M,
    META_KEY,
    OVERSAMPLING,
    QUANTILE,
    VECTOR_NAME,
    Filter,
    PointIn,
    Record,
    StoreBase,
    check_dim,
    first_line,
    graph_threshold_kb,
    indexed_fields,
    paged,
    payload_selector,
    to_record,
    unwanted_indexes,
    vector_list,
)
from mediasearch.store.filters import translate

_MEMORY_SERVERS: dict[str, Any] = {}  # ":memory:" -> QdrantClient, shared like one server would be


@contextlib.contextmanager
def server_errors(url: str, what: str) -> Iterator[None]:
    """Turn qdrant-client failures into a StoreError with one plain line."""
    from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

    try:
        yield
    except ResponseHandlingException as exc:
        reason = first_line(exc.source) if exc.source is not None else first_line(exc)
        raise StoreError(redact(f"cannot reach Qdrant at {redact_url(url)}: {reason}")) from exc
    except UnexpectedResponse as exc:
        content = exc.content.decode("utf-8", "replace")[:200] if exc.content else ""
        failed = f"Qdrant at {redact_url(url)}: {what} failed: HTTP {exc.status_code} {content}"
        raise StoreError(redact(failed.strip())) from exc
    except ValueError as exc:  # the in-process (":memory:") server reports errors this way
        raise StoreError(redact(f"Qdrant at {redact_url(url)}: {what} failed: {first_line(exc)}")) from exc


def server_client(url: str, api_key: str | None) -> Any:
    """A client for ``url``; ":memory:" gives this process's shared in-memory server."""
    from qdrant_client import QdrantClient

    if url == ":memory:":
        if url not in _MEMORY_SERVERS:
            _MEMORY_SERVERS[url] = QdrantClient(location=":memory:")
        return _MEMORY_SERVERS[url]
    # Our own probe below reports an unreachable server in one line (the version check would warn).
    client = QdrantClient(url=url, api_key=api_key, timeout=30, check_compatibility=False)
    with server_errors(url, "connect"):
        client.get_collections()
    return client


def release_client(url: str, client: Any) -> None:
    if url != ":memory:":
        client.close()


def forget_memory_servers() -> None:
    """Drop the in-memory servers (tests use this to start from nothing)."""
    _MEMORY_SERVERS.clear()


def _server_dim(url: str, collection: str, info: Any) -> int:
    vectors = info.config.params.vectors
    if not isinstance(vectors, dict) or VECTOR_NAME not in vectors:
        raise StoreError(f"collection {collection} at Qdrant {redact_url(url)} is not a mediasearch collection")
    return int(vectors[VECTOR_NAME].size)


def _create_collection(client: Any, collection: str, dim: int) -> None:
    from qdrant_client import models as m

    params = {VECTOR_NAME: m.VectorParams(size=dim, distance=m.Distance.COSINE)}
    try:
        client.create_collection(
            collection, vectors_config=params, quantization_config=_default_quantization(), **_graph_settings(dim)
        )
    except Exception:
        if not client.collection_exists(collection):  # lost a race with another worker: fine
            raise


def _default_quantization() -> Any:
    """The int8 copy the graph search walks, as on Edge (``store.base.QUANTIZATION``). A collection laid
    out by ``store create`` keeps the quantization it was given there."""
    from qdrant_client import models as m

    return m.ScalarQuantization(scalar=m.ScalarQuantizationConfig(type=m.ScalarType.INT8, quantile=QUANTILE))


def _search_params(exact: bool, ef: int) -> Any:
    """As on Edge: an exact scan ignores a quantized copy; the graph re-scores ``OVERSAMPLING`` x limit
    of its best on the stored vectors (a collection without a copy: the server ignores this)."""
    from qdrant_client import models as m

    if exact:
        return m.SearchParams(exact=True, quantization=m.QuantizationSearchParams(ignore=True))
    quantized = m.QuantizationSearchParams(rescore=True, oversampling=OVERSAMPLING)
    return m.SearchParams(exact=False, hnsw_ef=ef, quantization=quantized)


def _graph_settings(dim: int, degree: int = HNSW_M) -> dict[str, Any]:
    """The graph as the Edge store builds it (``store.base``: m, ef_construct, the switch point)."""
    from qdrant_client import models as m

    threshold = graph_threshold_kb(dim)
    return {
        "hnsw_config": m.HnswConfigDiff(m=degree, ef_construct=HNSW_EF_CONSTRUCT, full_scan_threshold=threshold),
        "optimizers_config": m.OptimizersConfigDiff(indexing_threshold=threshold),
    }


def _ensure_server_indexes(
    client: Any, collection: str, schema: dict[str, Any], indexed: Sequence[str] | None = None
) -> None:
    from qdrant_client import models as m

    text = m.TextIndexParams(type=m.TextIndexType.TEXT, tokenizer=m.TokenizerType.WORD, lowercase=True)
    types: dict[str, Any] = {"keyword": m.PayloadSchemaType.KEYWORD, "float": m.PayloadSchemaType.FLOAT}
    types |= {"geo": m.PayloadSchemaType.GEO, "text": text}
    wanted = [(f, types[kind]) for kind, fields in indexed_fields(indexed).items() for f in fields]
    with warnings.catch_warnings():  # in-memory mode warns that indexes do nothing there
        warnings.filterwarnings("ignore", message="Payload indexes have no effect")
        for field, kind in wanted:
            if field not in schema:
                client.create_payload_index(collection, field, field_schema=kind)
        for field in unwanted_indexes(schema, indexed):
            client.delete_payload_index(collection, field)


def open_server(
    url: str, api_key: str | None, collection: str, dim: int | None, create: bool, indexed: Sequence[str] | None = None
) -> QdrantStore:
    client = server_client(url, api_key)
    try:
        with server_errors(url, f"opening {collection}"):
            if not client.collection_exists(collection):
                if not create:
                    raise StoreError(f"there is no collection {collection} at Qdrant {redact_url(url)}")
                if dim is None:
                    raise StoreError(f"cannot create {collection} at Qdrant {redact_url(url)} without a vector size")
                _create_collection(client, collection, dim)
            info = client.get_collection(collection)
            stored = _server_dim(url, collection, info)
            check_dim(f"qdrant:{redact_url(url)}/{collection}", stored, dim)
            _ensure_server_indexes(client, collection, info.payload_schema or {}, indexed)
    except BaseException:
        release_client(url, client)
        raise
    return QdrantStore(client, url, collection, stored)


class ServerConditions:
    """``filters.Conditions`` in qdrant-client's models (a server, or the in-process one)."""

    def __init__(self) -> None:
        from qdrant_client import models

        self.m: Any = models

    def match(self, key: str, value: str) -> Any:
        return self.m.FieldCondition(key=key, match=self.m.MatchValue(value=value))

    def text(self, key: str, words: str) -> Any:
        return self.m.FieldCondition(key=key, match=self.m.MatchText(text=words))

    def range(self, key: str, gte: float | None, lt: float | None) -> Any:
        return self.m.FieldCondition(key=key, range=self.m.Range(gte=gte, lt=lt))

    def geo(self, key: str, lat: float, lon: float, metres: float) -> Any:
        radius = self.m.GeoRadius(center=self.m.GeoPoint(lat=lat, lon=lon), radius=metres)
        return self.m.FieldCondition(key=key, geo_radius=radius)

    def not_ids(self, ids: tuple[str, ...]) -> Any:
        return self.m.HasIdCondition(has_id=list(ids))

    def combine(self, must: list[Any], must_not: list[Any]) -> Any:
        return self.m.Filter(must=must or None, must_not=must_not or None)


def _server_filter(flt: Filter | None) -> Any:
    return None if flt is None or flt.is_empty() else translate(flt, ServerConditions())


def _server_payload_selector(fields: Sequence[str] | None) -> Any:
    from qdrant_client import models as m

    return payload_selector(fields, lambda include: m.PayloadSelectorInclude(include=include))


class QdrantStore(StoreBase):
    """A collection on a Qdrant server or cluster (or the in-process ":memory:" server)."""

    def __init__(self, client: Any, url: str, collection: str, dim: int) -> None:
        self._client: Any = client
        self._url = url
        self._local = url == ":memory:"
        self._count_cache: tuple[float, int] = (-1e9, 0)
        self.location = f"qdrant:{redact_url(url)}/{collection}"
        self.collection = collection
        self.dim = dim

    def _errors(self, what: str) -> contextlib.AbstractContextManager[None]:
        if self._client is None:
            raise StoreError(f"the store at {self.location} is closed")
        return server_errors(self._url, what)

    def _size_estimate(self) -> int:
        stamp, size = self._count_cache
        if time.monotonic() - stamp > 30.0:  # one round trip per 30 s, not per query
            with self._errors("count"):
                size = int(self._client.count(self.collection, exact=False).count)
            self._count_cache = (time.monotonic(), size)
        return size

    def get_meta(self) -> dict[str, Any] | None:
        """The collection's metadata (the model that built it, ...), None if never set."""
        with self._errors("reading metadata"):
            metadata = self._client.get_collection(self.collection).config.metadata or {}
        meta = metadata.get(META_KEY)
        return meta if isinstance(meta, dict) else None

    def set_meta(self, meta: dict[str, Any]) -> None:
        """Replace the collection's metadata (kept under one key of the collection metadata)."""
        with self._errors("writing metadata"):
            self._client.update_collection(self.collection, metadata={META_KEY: meta})

    def upsert(self, points: Sequence[PointIn], *, wait: bool = True) -> None:
        """Insert or replace points (by id); returns once the server has applied them, or with
        ``wait=False`` once it has accepted them (bulk writers follow with :meth:`wait_applied`)."""
        if not points:
            return
        from qdrant_client import models as m

        structs = [
            m.PointStruct(id=p.id, vector={VECTOR_NAME: vector_list(p.vector, self.dim)}, payload=p.payload)
            for p in points
        ]
        with self._errors("upsert"):
            self._client.upsert(self.collection, points=structs, wait=wait)

    def delete(self, ids: Sequence[str]) -> None:
        """Delete points by id (missing ids are ignored)."""
        if ids:
            from qdrant_client import models as m

            with self._errors("delete"):
                self._client.delete(self.collection, m.PointIdsList(points=list(ids)), wait=True)

    def delete_where(self, flt: Filter) -> None:
        """Delete every point matching ``flt`` (an empty filter deletes nothing)."""
        server_filter = _server_filter(flt)
        if server_filter is not None:
            from qdrant_client import models as m

            with self._errors("delete"):
                self._client.delete(self.collection, m.FilterSelector(filter=server_filter), wait=True)

    def set_payload(self, ids: Sequence[str], payload: dict[str, Any]) -> None:
        """Merge ``payload`` keys into the payload of the given points."""
        if ids:
            with self._errors("set_payload"):
                self._client.set_payload(self.collection, payload, points=list(ids), wait=True)

    def retrieve(self, ids: Sequence[str], *, with_vectors: bool = False) -> list[Record]:
        """The points with these ids that exist (order not guaranteed)."""
        if not ids:
            return []
        with self._errors("retrieve"):
            found = self._client.retrieve(self.collection, list(ids), with_payload=True, with_vectors=with_vectors)
        return [to_record(r) for r in found]

    def scroll(
        self,
        flt: Filter | None = None,
        *,
        fields: Sequence[str] | None = None,
        with_vectors: bool = False,
        batch: int = 1024,
    ) -> Iterator[Record]:
        """Every matching point, in id order; ``fields`` limits the payload keys returned."""
        selector, server_filter = _server_payload_selector(fields), _server_filter(flt)

        def fetch(offset: Any) -> tuple[Any, Any]:
            with self._errors("scroll"):
                return self._client.scroll(
                    self.collection,
                    scroll_filter=server_filter,
                    limit=batch,
                    offset=offset,
                    with_payload=selector,
                    with_vectors=with_vectors,
                )

        return paged(fetch)

    def search(
        self,
        vector: np.ndarray,
        limit: int,
        flt: Filter | None = None,
        *,
        with_vectors: bool = False,
        exact: bool | None = None,
    ) -> list[Record]:
        """Nearest points by cosine similarity, best first (exact up to a size; see EdgeStore)."""
        if limit <= 0:
            return []

        # The in-memory server is always exact and warns about search params.
        params = None if self._local else _search_params(self._use_exact(exact), self._search_ef(limit))
        with self._errors("search"):
            response = self._client.query_points(
                self.collection,
                query=vector_list(vector, self.dim),
                using=VECTOR_NAME,
                limit=limit,
                query_filter=_server_filter(flt),
                with_payload=True,
                with_vectors=with_vectors,
                search_params=params,
            )
        return [to_record(h) for h in response.points]

    def count(self, flt: Filter | None = None) -> int:
        """How many points match ``flt`` (all points when None)."""
        with self._errors("count"):
            return int(self._client.count(self.collection, count_filter=_server_filter(flt), exact=True).count)

    def facet(self, key: str, flt: Filter | None = None, limit: int = 1000) -> dict[str, int]:
        """Point counts per value of an indexed keyword field (kind, dirs, path, root, tags)."""
        with self._errors("facet"):
            response = self._client.facet(
                self.collection, key, facet_filter=_server_filter(flt), limit=limit, exact=True
            )
        return {str(hit.value): int(hit.count) for hit in response.hits}

    def flush(self) -> None:
        """Nothing to do: the server has applied (and logged) every write when it returned."""

    def wait_applied(self, ids: Sequence[str], timeout_s: float = 600.0, poll_s: float = 0.5) -> None:
        """The barrier after ``wait=False`` writes: wait until the collection is green and holds every
        one of ``ids``; StoreError when that takes longer than ``timeout_s``."""
        from qdrant_client import models as m

        deadline = time.monotonic() + timeout_s
        pending = list(dict.fromkeys(ids))
        while True:
            with self._errors("waiting for writes"):
                green = self._client.get_collection(self.collection).status == m.CollectionStatus.GREEN
                pending = self._missing(pending)
            if green and not pending:
                return
            if time.monotonic() > deadline:
                state = "green" if green else "not green"
                raise StoreError(
                    f"Qdrant at {redact_url(self._url)}: {len(pending)} written points not applied "
                    f"after {timeout_s:.0f} s "
                    f"(collection {state}); run the command again to resume"
                )
            time.sleep(poll_s)

    def set_bulk_load(self, on: bool) -> bool:
        """Bulk-load mode on (no HNSW graph is built while points pour in) or off (the graph degree
        it had is restored and the server builds the graph in the background). True when it changed."""
        from qdrant_client import models as m

        meta = self.get_meta() or {}
        if on == ("bulk_load" in meta):
            return False
        with self._errors("switching bulk-load mode"):
            if on:
                degree = self._client.get_collection(self.collection).config.hnsw_config.m
                meta["bulk_load"] = {"m": degree or HNSW_M}
                self._client.update_collection(self.collection, hnsw_config=m.HnswConfigDiff(m=0))
            else:
                degree = int(meta.pop("bulk_load").get("m") or HNSW_M)
                self._client.update_collection(self.collection, hnsw_config=m.HnswConfigDiff(m=degree))
        self.set_meta(meta)
        return True

    @property
    def in_bulk_load(self) -> bool:
        return "bulk_load" in (self.get_meta() or {})

    def _missing(self, ids: list[str]) -> list[str]:
        missing: list[str] = []
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            found = self._client.retrieve(self.collection, chunk, with_payload=False, with_vectors=False)
            have = {str(r.id) for r in found}
            missing += [i for i in chunk if i not in have]
        return missing

    def optimize(self) -> bool:
        """Nothing to do: a server builds its HNSW index in the background."""
        return False

    def graph_points(self) -> int:
        """How many points the server's search graph holds so far."""
        with self._errors("info"):
            return int(self._client.get_collection(self.collection).indexed_vectors_count or 0)

    def close(self) -> None:
        """Close the connection (the shared in-memory server stays alive)."""
        if self._client is not None:
            release_client(self._url, self._client)
            self._client = None


# ---------------------------------------------------------------------------------------------
# Opening, listing and switching collections

QUANTIZATIONS = ("none", "int8", "binary")


@dataclass(frozen=True)
class CollectionOptions:
    """How a server collection is laid out (docs/scale.md: what each costs at 100M points)."""

    shards: int = 1
    replicas: int = 1
    on_disk: bool = False  # vectors and payload memory-mapped from disk; RAM keeps the graph (and quantized copy)
    quantization: str = "none"  # int8: 4x smaller RAM copy for search, rescored; binary: 32x
    float16: bool = False  # store vectors in half precision, as the Edge store does
    bulk_load: bool = False  # no HNSW graph until the first load is over (see QdrantStore.set_bulk_load)

    def check(self) -> None:
        if self.shards < 1 or self.replicas < 1:
            raise StoreError("--shards and --replicas must be at least 1")
        if self.quantization not in QUANTIZATIONS:
            raise StoreError(f"--quantization must be one of {', '.join(QUANTIZATIONS)}, not {self.quantization!r}")


def _quantization_config(kind: str) -> Any:
    from qdrant_client import models as m

    if kind == "int8":
        return m.ScalarQuantization(scalar=m.ScalarQuantizationConfig(type=m.ScalarType.INT8, always_ram=True))
    if kind == "binary":
        return m.BinaryQuantization(binary=m.BinaryQuantizationConfig(always_ram=True))
    return None


def create_server_collection(
    url: str, api_key: str | None, collection: str, dim: int, options: CollectionOptions
) -> None:
    """Create ``collection`` on the server with ``options`` (and the payload indexes queries filter on);
    StoreError when it exists already (its layout is fixed: migrate into a new one instead)."""
    from qdrant_client import models as m

    options.check()
    client = server_client(url, api_key)
    try:
        with server_errors(url, f"creating {collection}"):
            if client.collection_exists(collection):
                shown = redact_url(url)
                raise StoreError(f"collection {collection} exists at Qdrant {shown}: its layout cannot change")
            datatype = m.Datatype.FLOAT16 if options.float16 else None
            vectors = m.VectorParams(
                size=dim, distance=m.Distance.COSINE, on_disk=options.on_disk or None, datatype=datatype
            )
            client.create_collection(
                collection,
                vectors_config={VECTOR_NAME: vectors},
                shard_number=options.shards,
                replication_factor=options.replicas,
                on_disk_payload=options.on_disk,
                quantization_config=_quantization_config(options.quantization),
                **_graph_settings(dim, 0 if options.bulk_load else HNSW_M),
            )
            _ensure_server_indexes(client, collection, {})
    finally:
        release_client(url, client)
