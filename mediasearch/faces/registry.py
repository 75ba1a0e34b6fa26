"""What a user says about people, kept in the home (``faces/people.json``): names, hidden people,
faces taken out of a person by hand, and the next id to give. The faces themselves are in the store;
this file is small and survives re-indexing and model switches. Written atomically (``fsutil``).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mediasearch.errors import ConfigError, QueryError, UnknownPersonError  # noqa: F401  (importable from here too)
from mediasearch.fsutil import atomic_write

PEOPLE_FILE = "people.json"
VERSION = 1


@dataclass
class PersonInfo:
    """A user's word on one person."""

    name: str | None = None
    hidden: bool = False


@dataclass
class Registry:
    """Names and flags by person id, faces refused per person, and the next id to give."""

    next_id: int = 1
    people: dict[str, PersonInfo] = field(default_factory=dict)
    rejected: dict[str, list[str]] = field(default_factory=dict)  # face id -> people it must not join

    def info(self, person: str) -> PersonInfo:
        """The user's word on ``person`` (an empty one when nothing was said)."""
        return self.people.get(person) or PersonInfo()

    def name(self, person: str) -> str:
        """The person's name, or ``person <id>`` until it has one."""
        return self.info(person).name or f"person {person}"

    def set_name(self, person: str, name: str) -> None:
        name = " ".join(name.split())
        if not name:
            raise QueryError("a person's name cannot be empty")
        taken = [p for p, info in self.people.items() if info.name and info.name.casefold() == name.casefold()]
        if any(p != person for p in taken):
            raise QueryError(f"{name!r} already names person {taken[0]}: merge them with `people merge`")
        self.people.setdefault(person, PersonInfo()).name = name

    def resolve(self, name: str) -> str | None:
        """The id of the person called ``name`` (case-insensitive), or with that id; None if nobody."""
        wanted = " ".join(name.split()).casefold()
        for person, info in self.people.items():
            if info.name and info.name.casefold() == wanted:
                return person
        if wanted.startswith("person "):
            wanted = wanted[len("person ") :]
        return wanted if wanted.isdigit() else None

    def to_json(self) -> dict[str, Any]:
        people = {p: {"name": i.name, "hidden": i.hidden} for p, i in sorted(self.people.items()) if i.name or i.hidden}
        return {"version": VERSION, "next_id": self.next_id, "people": people, "rejected": self.rejected}


class RegistryFile:
    """``people.json`` in a folder, read and written whole under a lock (this process)."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / PEOPLE_FILE
        self._lock = threading.Lock()

    def load(self) -> Registry:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return Registry()
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {self.path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{self.path} is not a people file")
        people = {
            str(p): PersonInfo(name=v.get("name") or None, hidden=bool(v.get("hidden")))
            for p, v in (data.get("people") or {}).items()
            if isinstance(v, dict)
        }
        rejected = {str(f): [str(p) for p in v] for f, v in (data.get("rejected") or {}).items()}
        return Registry(next_id=int(data.get("next_id", 1)), people=people, rejected=rejected)

    def save(self, registry: Registry) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, json.dumps(registry.to_json(), indent=1, sort_keys=True) + "\n")

    @property
    def lock(self) -> threading.Lock:
        return self._lock
