"""This round's signals on the search page, in a real browser: a hit's recognised text with the query's
words marked, and the people row (a face per person, a click lists their files, a name renames them).

One daemon (a subprocess, demo model) serves a home indexed from a few rendered shapes, two rendered
pictures with words, and photos of two people from ``../shared/data/faces`` (the people tests skip
without them). The enrichment pass (OCR, faces) runs in the daemon's background after indexing; the
fixture waits for it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon_helpers import Daemon
from test_web import browser, browser_tab, open_page, results  # noqa: F401  (the browser fixture)

from mediasearch.lab import textpics
from mediasearch.lab.shapes import make_library
from mediasearch.library import roots

FACES = Path(__file__).resolve().parents[3] / "shared" / "data" / "faces"
WORDS = ("ESPRESSO", "BAR", "LATTE", "4.50")


def _two_people() -> dict[str, list[str]]:
    """Two people of the shared photos with at least three single-person photos each: person → files."""
    if not (FACES / "truth.json").is_file():
        return {}
    files = json.loads((FACES / "truth.json").read_text())["files"]
    by_person: dict[str, list[str]] = {}
    for name, info in sorted(files.items()):
        if info.get("kind") == "person" and len(info.get("people", [])) == 1:
            by_person.setdefault(info["people"][0], []).append(name)
    chosen = sorted((p for p, f in by_person.items() if len(f) >= 3), key=lambda p: -len(by_person[p]))[:2]
    return {p: by_person[p][:3] for p in chosen}


@pytest.fixture(scope="module")
def signals_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, dict[str, list[str]]]]:
    base = tmp_path_factory.mktemp("signals")
    daemon = Daemon(base / "home", "--rescan-every", "off")
    try:
        lib = base / "library"
        make_library(lib / "shapes", 8, seed=3)
        face = next(iter(textpics.fonts()), None)
        textpics.scene(WORDS[:2], font_path=face, size=56, angle=0.0, dark=False, seed=1).save(lib / "sign.jpg")
        textpics.scene(WORDS[2:], font_path=face, size=56, angle=0.0, dark=True, seed=2).save(lib / "receipt.jpg")
        people = _two_people()
        for files in people.values():
            for name in files:
                (lib / "people").mkdir(exist_ok=True)
                shutil.copy(FACES / name, lib / "people" / name)
        daemon.wait_ready()
        roots.record(base / "home", [str(lib)])
        summary = daemon.call("POST", "/index", {"paths": [str(lib)], "watch": False})
        assert not summary["errors"], summary
        daemon.wait_idle(timeout=120)
        daemon.wait_enriched(timeout=600)
        yield daemon, people
    finally:
        daemon.stop()


@pytest.fixture
def tab(browser: Any) -> Iterator[Any]:  # noqa: F811
    with browser_tab(browser, timeout_ms=20000) as page:
        yield page


def test_a_word_in_a_picture_is_found_and_marked(tab: Any, signals_daemon: tuple[Daemon, Any]) -> None:
    """Searching a word written in one picture puts that picture first, with the recognised line under it
    and the word inside a <mark>; the other picture's words are not marked."""
    daemon, _ = signals_daemon
    open_page(tab, daemon)
    tab.fill("#q", "latte")
    tab.press("#q", "Enter")
    cards = results(tab)
    assert Path(cards[0]["path"]).name == "receipt.jpg", cards[:3]
    first = tab.locator("#results .card").first
    marked = first.locator("mark").all_inner_texts()
    assert [m.lower() for m in marked] == ["latte"], marked
    shown = first.inner_text().lower()
    assert "latte" in shown and "espresso" not in shown


def _person_row(tab: Any) -> list[dict[str, str]]:
    tab.wait_for_selector("#people:not([hidden]) .person")
    return list(
        tab.eval_on_selector_all(
            "#people-list .person",
            "items => items.map(li => ({id: li.dataset.person, name: li.querySelector('.name').textContent,"
            " faces: li.querySelector('.count').textContent}))",
        )
    )


def test_the_people_row_lists_each_person_and_a_click_shows_their_files(
    tab: Any, signals_daemon: tuple[Daemon, dict[str, list[str]]]
) -> None:
    daemon, people = signals_daemon
    if len(people) < 2:
        pytest.skip("needs ../shared/data/faces (photos of real people)")
    listed = daemon.call("GET", "/people")
    open_page(tab, daemon)
    row = _person_row(tab)
    assert [p["id"] for p in row] == [p["id"] for p in listed[:24]]
    assert all(p["name"] == "Add a name" for p in row)  # nobody named yet
    # The faces load through the read token the page was given.
    tab.wait_for_function(
        "() => [...document.querySelectorAll('#people-list img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    biggest = listed[0]
    tab.locator(f'#people-list .person[data-person="{biggest["id"]}"] .face').click()
    cards = results(tab, "person")
    assert sorted(c["path"] for c in cards) == sorted(biggest["files"])
    wanted = {name for files in people.values() for name in files}
    assert {Path(c["path"]).name for c in cards} <= wanted  # only photos of people: no shape, no sign
    assert tab.locator("#summary").inner_text().startswith("Unnamed person")


def test_renaming_a_person_needs_a_token_that_may_write(
    tab: Any, signals_daemon: tuple[Daemon, dict[str, list[str]]]
) -> None:
    """The page opened with the read token (what ``serve`` prints for it) cannot rename: the name stays
    and the page says why; opened with the full token, the new name is saved and shown after a reload."""
    daemon, people = signals_daemon
    if len(people) < 2:
        pytest.skip("needs ../shared/data/faces (photos of real people)")
    person = daemon.call("GET", "/people")[0]["id"]
    label = f'#people-list .person[data-person="{person}"] .name'

    def rename(to: str) -> None:
        _person_row(tab)
        tab.locator(label).click()
        tab.fill("#people-list input.rename", to)
        tab.press("#people-list input.rename", "Enter")

    open_page(tab, daemon)
    rename("Alice")
    tab.wait_for_selector("#summary .error")
    assert next(p for p in daemon.call("GET", "/people") if p["id"] == person)["name"] in (None, "")
    assert tab.locator(label).inner_text() == "Add a name"

    assert daemon.client is not None
    tab.goto(f"{daemon.client.info.url}/?token={daemon.client.info.token}")
    rename("Alice")
    tab.wait_for_function(f"() => document.querySelector('{label}')?.textContent === 'Alice'")
    assert next(p for p in daemon.call("GET", "/people") if p["id"] == person)["name"] == "Alice"
    tab.reload()
    assert next(p for p in _person_row(tab) if p["id"] == person)["name"] == "Alice"
