"""`mediasearch people ...` and `Library.people()` on a home whose faces come from the shared photos."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mediasearch import Library
from mediasearch.faces.engine import Face
from mediasearch.index.people import acquire_people, release_people
from mediasearch.store import point_id


def fill(home: Path, detected: dict[str, list[Face]], names: list[str], folder: Path) -> dict[str, list[str]]:
    """The faces of these photos in the home, as if the faces enricher had run on them."""
    people = acquire_people(home)
    try:
        return {n: people.replace(str(folder / n), point_id(str(folder / n), None), None, detected[n]) for n in names}
    finally:
        release_people(people)


@pytest.fixture
def filled(cli: Any, faces_dir: Path, truth: dict[str, Any], detected: dict[str, list[Face]]) -> dict[str, Any]:
    names = [n for n in sorted(truth) if truth[n]["kind"] in ("person", "group") and detected[n]]
    found = fill(cli.home, detected, names, faces_dir)
    return {"found": found, "names": names}


def test_people_json_lists_everyone_largest_first(cli: Any, filled: dict[str, Any], faces_dir: Path) -> None:
    rows = cli.json("people", model=None)
    assert rows and set(rows[0]) == {"id", "name", "faces", "files", "cover"}
    assert [r["faces"] for r in rows] == sorted((r["faces"] for r in rows), reverse=True)
    top = rows[0]
    assert top["faces"] >= 5 and top["name"] is None
    assert set(top["files"]) == {str(faces_dir / n) for n, ids in filled["found"].items() if top["id"] in ids}
    assert top["cover"]["path"] in top["files"] and len(top["cover"]["box"]) == 4


def test_name_merge_hide_and_remove_face_from_the_command_line(cli: Any, filled: dict[str, Any]) -> None:
    rows = cli.json("people", model=None)
    first, second = rows[0]["id"], rows[1]["id"]
    named = cli.json("people", "name", first, "Alice", model=None)
    assert named["name"] == "Alice" and named["id"] == first
    clash = cli("people", "name", second, "alice", model=None, ok=False)
    assert clash.exit_code == 1 and "already names" in clash.stderr and "Traceback" not in clash.output
    merged = cli.json("people", "merge", first, second, model=None)
    assert merged["faces"] == rows[0]["faces"] + rows[1]["faces"]
    assert second not in {r["id"] for r in cli.json("people", model=None)}
    wrong = rows[1]["files"][0]
    apart = cli.json("people", "remove-face", wrong, "--face", "0", model=None)
    assert len(apart) == 1 and apart[0]["id"] not in (first, second) and apart[0]["files"] == [wrong]
    after = {r["id"]: r for r in cli.json("people", model=None)}
    assert after[first]["faces"] == merged["faces"] - 1 and wrong not in after[first]["files"]
    cli("people", "hide", first, model=None)
    assert first not in {r["id"] for r in cli.json("people", model=None)}
    assert first in {r["id"] for r in cli.json("people", "--hidden", model=None)}
    unknown = cli("people", "merge", first, "99999", model=None, ok=False)
    assert unknown.exit_code == 1 and "there is no person 99999" in unknown.stderr


def test_the_python_api_says_the_same(cli: Any, filled: dict[str, Any]) -> None:
    rows = cli.json("people", model=None)
    with Library.open(home=cli.home, use_daemon=False) as lib:
        people = lib.people()
        assert [p.id for p in people] == [r["id"] for r in rows]
        person = lib.name_person(people[0].id, "Bob")
        assert person.name == "Bob" and person.cover is not None and person.cover.path in person.files
    assert cli.json("people", model=None)[0]["name"] == "Bob"
