"""Duplicates among indexed files: exact copies, and near-duplicates verified on pixels.

- **Exact**: the same size and content fingerprint (the stored head-and-tail hash), confirmed by a
  hash of the whole file.
- **Near, images**: candidates are each image's nearest neighbours by its stored vector (so the cost
  grows with the index, not with n²); each candidate pair is then verified on pixels. CLIP alone cannot
  tell a copy from another photo of the same subject (two red circles are neighbours too), so the pair
  must also look the same: the normalised correlation of small grey thumbnails, the best over crops
  of up to 6 % on each side (a copy may be cropped a little). On rendered photos a resized,
  4 %-cropped, JPEG q55 copy scores 0.994 or more, other photos of the same subject 0.81 or less.
  A DCT bit hash (pHash) was tried first: a 4 % crop flipped up to 24 of its 64 bits, as many as some
  different photos differ by, so it could not separate them.
- **Near, videos**: candidates come from the neighbours of a few of a video's stored frames; a pair
  must have about the same duration, its frames must match over the whole video (each stored frame
  against the other video's frame nearest in time), and the frames at a quarter, half and three
  quarters must look the same. So two videos that share only an intro (the black frames that make
  one-frame-per-video tools group different videos) are not grouped.

A group's ``similarity`` is the weakest verified link in it (1.0 for byte copies).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from mediasearch.errors import MediaSearchError, QueryError
from mediasearch.media.discover import display_path, path_from_payload
from mediasearch.store.base import Filter, Store

if TYPE_CHECKING:
    from PIL import Image

DEFAULT_THRESHOLD = 0.95  # pixel similarity (0..1) a near-duplicate needs
CANDIDATE_COS = 0.85  # stored-vector cosine below which two files are not even compared
NEIGHBOURS = 16  # nearest neighbours looked at per image (and per probed video frame)
VIDEO_PROBES = 5  # frames of a video whose neighbours nominate candidate videos
VIDEO_FRAME_COS = 0.9  # mean cosine of time-aligned frames that two copies of a video reach
DURATION_SLACK = 0.05  # two copies of a video last the same to within 5 % (or one frame interval)
_BASE_SIZE = (96, 72)  # grey thumbnail kept per file
_SIDE = 24  # the compared thumbnails are _SIDE x _SIDE
_CROPS = (0.0, 0.02, 0.04, 0.06)  # fractions cropped from each side when aligning a cropped copy
_FLAT_STD = 2.0  # grey levels: a thumbnail this uniform has no pattern to correlate
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class Group:
    """Files that are copies of each other: shown paths (sorted), the weakest link, exact or near."""

    paths: list[str]
    similarity: float
    kind: str  # "exact" | "near"


@dataclass
class _File:
    path: str  # the real path, to read
    shown: str  # the path as stored and printed
    kind: str
    size: int
    fingerprint: str
    ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Edge:
    a: str
    b: str
    similarity: float
    exact: bool


def find_duplicates(store: Store, paths: Sequence[str] = (), *, threshold: float = DEFAULT_THRESHOLD) -> list[Group]:
    """Groups of copies among the indexed files under ``paths`` (everything when empty), largest first."""
    if not 0.0 < threshold <= 1.0:
        raise QueryError(f"the threshold is a similarity between 0 and 1, not {threshold}")
    scopes = scope_filters(paths)
    files = _files(store, scopes)
    edges = _exact_edges(files)
    looks = _Looks()
    edges += _image_edges(store, files, scopes, threshold, looks)
    edges += _video_edges(store, files, scopes, threshold, looks)
    return _groups(files, edges)


def scope_filters(paths: Sequence[str]) -> list[Filter]:
    """One store filter per path: the file itself, or everything under the folder."""
    if not paths:
        return [Filter()]
    scopes = []
    for path in paths:
        absolute = os.path.abspath(path)
        shown = display_path(absolute)
        scopes.append(Filter(path=shown) if os.path.isfile(absolute) else Filter(dir_prefix=shown))
    return scopes


def _files(store: Store, scopes: Sequence[Filter]) -> dict[str, _File]:
    fields = ("path", "path_raw", "kind", "size", "fingerprint")
    files: dict[str, _File] = {}
    for scope in scopes:
        for rec in store.scroll(scope, fields=fields):
            p = rec.payload
            path = path_from_payload(p)
            found = files.get(path)
            if found is None:
                kind, size, fprint = str(p.get("kind")), int(p.get("size", -1)), str(p.get("fingerprint"))
                found = files[path] = _File(path, str(p.get("path", path)), kind, size, fprint)
            if rec.id not in found.ids:
                found.ids.append(rec.id)
    return files


# -- exact copies ---------------------------------------------------------------------------------


def _exact_edges(files: dict[str, _File]) -> list[_Edge]:
    """Files with the same size and fingerprint whose whole content hashes the same."""
    by_print: dict[tuple[int, str], list[_File]] = {}
    for f in files.values():
        by_print.setdefault((f.size, f.fingerprint), []).append(f)
    edges: list[_Edge] = []
    for same_print in by_print.values():
        if len(same_print) < 2:
            continue
        by_hash: dict[str, list[str]] = {}
        for f in same_print:
            digest = full_hash(f.path)
            if digest is not None:
                by_hash.setdefault(digest, []).append(f.path)
        for same in by_hash.values():
            edges += [_Edge(same[0], other, 1.0, True) for other in same[1:]]
    return edges


def full_hash(path: str) -> str | None:
    """BLAKE2b of the whole file; None when it cannot be read (gone since it was indexed)."""
    digest = hashlib.blake2b(digest_size=32)
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(_HASH_CHUNK), b""):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def _same_bytes(a: _File, b: _File) -> bool:
    return a.size == b.size and a.fingerprint == b.fingerprint


# -- near-duplicate images ------------------------------------------------------------------------


def _neighbours(store: Store, vector: np.ndarray, scopes: Sequence[Filter], kind: str, own: _File) -> Iterator[str]:
    """Real paths of the files whose points are among the nearest to ``vector``, ``own`` left out (in the
    search itself: a long video's own frames would otherwise fill every place)."""
    for scope in scopes:
        for rec in store.search(vector, NEIGHBOURS, replace(scope, kind=kind, exclude_ids=tuple(own.ids))):
            path = path_from_payload(rec.payload)
            if path != own.path and (rec.score or 0.0) >= CANDIDATE_COS:
                yield path


def _image_edges(
    store: Store, files: dict[str, _File], scopes: Sequence[Filter], threshold: float, looks: _Looks
) -> list[_Edge]:
    edges: list[_Edge] = []
    checked: set[tuple[str, str]] = set()
    for scope in scopes:
        for rec in store.scroll(replace(scope, kind="image"), fields=("path", "path_raw"), with_vectors=True):
            a = path_from_payload(rec.payload)
            if rec.vector is None or a not in files:
                continue
            for b in _neighbours(store, rec.vector, scopes, "image", files[a]):
                pair = (min(a, b), max(a, b))
                if b not in files or pair in checked or _same_bytes(files[a], files[b]):
                    continue
                checked.add(pair)
                similarity = looks.image_similarity(a, b)
                if similarity >= threshold:
                    edges.append(_Edge(a, b, similarity, False))
    return edges


class _Looks:
    """Small grey thumbnails of files, computed once each, and how alike two of them are."""

    def __init__(self) -> None:
        self._images: dict[str, np.ndarray | None] = {}

    def image_similarity(self, a: str, b: str) -> float:
        """Pixel similarity of two image files (0 when either cannot be read)."""
        base_a, base_b = self._image(a), self._image(b)
        if base_a is None or base_b is None:
            return 0.0
        return pixel_similarity(base_a, base_b)

    def _image(self, path: str) -> np.ndarray | None:
        if path not in self._images:
            from mediasearch.media.decode import load_image

            try:
                image, _ = load_image(path, target=_BASE_SIZE[0])
            except (MediaSearchError, OSError):
                self._images[path] = None
            else:
                self._images[path] = grey_base(image)
        return self._images[path]


def grey_base(image: Image.Image) -> np.ndarray:
    """The grey thumbnail that pixel similarity compares (float, _BASE_SIZE)."""
    from PIL import Image as PILImage

    small = image.convert("L").resize(_BASE_SIZE, PILImage.Resampling.BOX)
    return np.asarray(small, dtype=np.float32)


def pixel_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised correlation of two grey thumbnails (-1..1), the best over small crops of either.

    Two flat pictures (a black frame, a blank page) are alike when their brightness is.
    """
    flat_a, flat_b = float(a.std()) < _FLAT_STD, float(b.std()) < _FLAT_STD
    if flat_a or flat_b:
        return 1.0 if flat_a and flat_b and abs(float(a.mean()) - float(b.mean())) <= _FLAT_STD else 0.0
    crops_a, crops_b = _crop_patches(a), _crop_patches(b)
    return max(-1.0, min(1.0, float(max((crops_a @ crops_b[0]).max(), (crops_b @ crops_a[0]).max()))))


def _crop_patches(base: np.ndarray) -> np.ndarray:
    """``base`` cropped by every combination of _CROPS on its four sides, each averaged down to
    _SIDE x _SIDE, zero-mean and unit length: one row per crop, the uncropped one first."""
    rows = np.stack([_area_matrix(base.shape[0], t, b) for t, b in itertools.product(_CROPS, repeat=2)])
    cols = np.stack([_area_matrix(base.shape[1], le, r) for le, r in itertools.product(_CROPS, repeat=2)])
    by_rows = rows @ base.astype(np.float64)  # (crops of rows, _SIDE, width)
    patches = (by_rows[:, None] @ cols.transpose(0, 2, 1)[None]).reshape(-1, _SIDE * _SIDE)
    patches -= patches.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(patches, axis=1, keepdims=True)
    return patches / np.maximum(norms, 1e-9)


@functools.cache
def _area_matrix(size: int, cut_start: float, cut_end: float) -> np.ndarray:
    """(_SIDE, size) weights that average the pixels of [cut_start*size, size - cut_end*size) into _SIDE bins."""
    edges = np.linspace(cut_start * size, size - cut_end * size, _SIDE + 1)
    pixel = np.arange(size)
    lo, hi = np.maximum(edges[:-1, None], pixel[None, :]), np.minimum(edges[1:, None], pixel[None, :] + 1)
    overlap = np.clip(hi - lo, 0.0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


# -- near-duplicate videos ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Frames:
    times: np.ndarray  # seconds, ascending
    vectors: np.ndarray  # one stored vector per time


def _video_edges(
    store: Store, files: dict[str, _File], scopes: Sequence[Filter], threshold: float, looks: _Looks
) -> list[_Edge]:
    frames: dict[str, _Frames | None] = {}

    def frames_of(f: _File) -> _Frames | None:
        if f.path not in frames:
            frames[f.path] = _stored_frames(store, f)
        return frames[f.path]

    edges: list[_Edge] = []
    checked: set[tuple[str, str]] = set()
    for video in (f for f in files.values() if f.kind == "video"):
        mine = frames_of(video)
        if mine is None:
            continue
        probes = np.unique(np.linspace(0, len(mine.times) - 1, VIDEO_PROBES).round().astype(int))
        candidates = {b for i in probes for b in _neighbours(store, mine.vectors[i], scopes, "video", video)}
        for b in sorted(candidates):
            pair = (min(video.path, b), max(video.path, b))
            if b not in files or pair in checked or _same_bytes(video, files[b]):
                continue
            checked.add(pair)
            theirs = frames_of(files[b])
            if theirs is None or sequence_similarity(mine, theirs) < VIDEO_FRAME_COS:
                continue
            similarity = _video_pixels(video.path, b, mine.times)
            if similarity >= threshold:
                edges.append(_Edge(video.path, b, similarity, False))
    return edges


def _stored_frames(store: Store, f: _File) -> _Frames | None:
    records = store.retrieve(f.ids, with_vectors=True)
    timed = sorted((float(r.payload.get("timestamp") or 0.0), r.vector) for r in records if r.vector is not None)
    if not timed:
        return None
    return _Frames(np.array([t for t, _ in timed]), np.stack([v for _, v in timed]).astype(np.float32))


def sequence_similarity(a: _Frames, b: _Frames) -> float:
    """Mean cosine of time-aligned frames, the worse of both directions; 0 when the durations differ."""
    span_a, span_b = float(a.times[-1]), float(b.times[-1])
    step = float(np.median(np.diff(a.times))) if len(a.times) > 1 else 0.0
    if abs(span_a - span_b) > max(DURATION_SLACK * max(span_a, span_b), step):
        return 0.0
    return min(_aligned_cosine(a, b), _aligned_cosine(b, a))


def _aligned_cosine(a: _Frames, b: _Frames) -> float:
    """Each frame of ``a`` against the frame of ``b`` nearest in time."""
    right = np.clip(np.searchsorted(b.times, a.times), 0, len(b.times) - 1)
    left = np.clip(right - 1, 0, len(b.times) - 1)
    nearest = np.where(np.abs(b.times[left] - a.times) <= np.abs(b.times[right] - a.times), left, right)
    return float(np.mean(np.sum(a.vectors * b.vectors[nearest], axis=1)))


def _video_pixels(a: str, b: str, times: np.ndarray) -> float:
    """The least pixel similarity of the two videos' frames at a quarter, half and three quarters."""
    from mediasearch.media.thumbnails import video_frame

    worst = 1.0
    for t in np.quantile(times, (0.25, 0.5, 0.75)):
        try:
            base_a = grey_base(video_frame(a, float(t), _BASE_SIZE[0]))
            base_b = grey_base(video_frame(b, float(t), _BASE_SIZE[0]))
        except (MediaSearchError, OSError):
            return 0.0
        worst = min(worst, pixel_similarity(base_a, base_b))
    return worst


# -- groups ---------------------------------------------------------------------------------------


def _groups(files: dict[str, _File], edges: Sequence[_Edge]) -> list[Group]:
    """Connected files as groups, largest first. Links are joined strongest first, so a group's
    similarity is the weakest link it needs to hold together (not the weakest pair checked)."""
    parent = {path: path for path in files}

    def root(path: str) -> str:
        while parent[path] != path:
            parent[path] = parent[parent[path]]
            path = parent[path]
        return path

    joined: list[_Edge] = []
    for edge in sorted(edges, key=lambda e: (not e.exact, -e.similarity)):
        a, b = root(edge.a), root(edge.b)
        if a != b:
            parent[a] = b
            joined.append(edge)
    members: dict[str, list[str]] = {}
    for path in files:
        members.setdefault(root(path), []).append(path)
    links: dict[str, list[_Edge]] = {}
    for edge in joined:
        links.setdefault(root(edge.a), []).append(edge)
    groups = [
        Group(
            paths=sorted(files[p].shown for p in paths),
            similarity=round(min(e.similarity for e in links[key]), 4),
            kind="exact" if all(e.exact for e in links[key]) else "near",
        )
        for key, paths in members.items()
        if len(paths) > 1
    ]
    groups.sort(key=lambda g: (-len(g.paths), -g.similarity, g.paths[0]))
    return groups
