"""The contract between :class:`mediasearch.Library` and what answers it: this process, or a daemon."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from mediasearch.library.types import DuplicateGroup, Explanation, Hit, IndexReport, PlaceCount, Status, TagReport

if TYPE_CHECKING:
    from mediasearch.clip.model import ClipModel
    from mediasearch.index.options import IndexOptions, Progress
    from mediasearch.library.text import FileText
    from mediasearch.search.query import Query
    from mediasearch.settings import Settings


class Backend(Protocol):
    """The use cases that need the store. ``LocalLibrary`` runs them here; ``RemoteLibrary`` asks the daemon."""

    settings: Settings

    @property
    def daemon(self) -> dict[str, Any] | None: ...

    def index_with(
        self, paths: Sequence[str], options: IndexOptions, *, tag: bool | None = None, progress: Progress | None = None
    ) -> IndexReport: ...

    def forget(self, path: str) -> int: ...

    def search(self, query: Query) -> list[Hit]: ...

    def similar(self, path: str, query: Query) -> list[Hit]: ...

    def explain(self, query: Query) -> Explanation: ...

    def duplicates(self, paths: Sequence[str], threshold: float | None = None) -> list[DuplicateGroup]: ...

    def text(self, path: str) -> FileText: ...

    def tag(self, vocab: str | None, prompts: str | None) -> TagReport: ...

    def tags(self) -> dict[str, int]: ...

    def places(self) -> list[PlaceCount]: ...

    def status(self) -> Status: ...

    def load_model(self) -> ClipModel: ...

    def close(self) -> None: ...
