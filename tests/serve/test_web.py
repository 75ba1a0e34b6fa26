"""The search page in a real browser: headless Chromium, driven by Playwright, against `mediasearch serve`.

One daemon (a subprocess, demo model) serves a temporary home indexed from 96 rendered shape photos
and one video whose 8-second segments show a yellow triangle, a blue star and a green circle. The
browser tests read what the page shows through its data attributes (``data-path``, ``data-kind``,
``data-start`` on each result card, ``data-state`` and ``data-mode`` on the grid). They skip when no
Chromium can be found (or Playwright is missing); the HTTP checks of thumbnails, media and uploads
and the thumbnail unit tests run everywhere.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from daemon_helpers import Daemon

from mediasearch.cli.demo import VIDEO_SEGMENTS
from mediasearch.lab.shapes import make_library, render, save_image, write_shapes_video
from mediasearch.library import roots

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]
RED_CIRCLES = 4  # make_library(96) writes 4 photos per class


def find_browser() -> str | None:
    """A Chromium to drive: $MEDIASEARCH_CHROMIUM, else the first one on PATH."""
    given = os.environ.get("MEDIASEARCH_CHROMIUM")
    if given:
        return given if os.path.exists(given) else None
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def web_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A daemon on a home indexed (and tagged) from ``web_library``; the library is rendered while
    the daemon loads its model."""
    base = tmp_path_factory.mktemp("web")
    daemon = Daemon(base / "home", "--rescan-every", "off")
    try:
        lib = base / "library"
        make_library(lib / "photos", 96, seed=11)
        (lib / "videos").mkdir()
        write_shapes_video(lib / "videos" / "shapes.mp4", VIDEO_SEGMENTS, seed=11)
        daemon.wait_ready()
        roots.record(base / "home", [str(lib)])  # a library root, as `mediasearch index` on the machine makes it
        summary = daemon.call("POST", "/index", {"paths": [str(lib)], "watch": True, "tag": True})
        assert summary["added"] == 97 and not summary["errors"], summary
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture(scope="module")
def web_library(web_daemon: Daemon) -> Path:
    """96 rendered photos (4 per class) and the 24-second shapes video, as ``web_daemon`` indexed them."""
    return web_daemon.home.parent / "library"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium (Debian's, or any on PATH) under Playwright; skips when there is none."""
    executable = find_browser()
    if executable is None:
        pytest.skip("no Chromium found (install Debian's `chromium`, or set MEDIASEARCH_CHROMIUM)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()


@contextlib.contextmanager
def browser_tab(browser: Any, timeout_ms: int = 15000) -> Iterator[Any]:
    """A tab in a fresh browser context (empty cache and storage) at desktop size; a JavaScript error on
    the page fails the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(timeout_ms)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield tab
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture
def page(browser: Any, web_daemon: Daemon) -> Iterator[Any]:
    with browser_tab(browser) as tab:
        yield tab


def open_page(tab: Any, daemon: Daemon, fragment: str = "") -> None:
    assert daemon.client is not None
    # The read token, as `serve` prints it: the page only searches and views.
    tab.goto(f"{daemon.client.info.url}/?token={daemon.client.info.read_token}{fragment}")


def results(tab: Any, mode: str | None = None) -> list[dict[str, str]]:
    """The result cards once the grid is ready (in ``mode``, if given): their data attributes."""
    selector = "#results[data-state=ready]" + (f"[data-mode={mode}]" if mode else "")
    tab.wait_for_selector(selector)
    return list(tab.eval_on_selector_all("#results .card", "cards => cards.map(c => ({...c.dataset}))"))


def names(cards: list[dict[str, str]]) -> list[str]:
    return [Path(c["path"]).name for c in cards]


def wait_for_thumbnails(tab: Any, count: int) -> None:
    tab.wait_for_function(
        "n => [...document.querySelectorAll('#results .thumb .pic')].slice(0, n)"
        ".every(i => i.complete && i.naturalWidth > 0 && i.classList.contains('loaded'))",
        arg=count,
    )


# -- in the browser ------------------------------------------------------------------------------


def test_text_search_shows_red_circles_first_and_more_like_this_changes_the_grid(
    page: Any, web_daemon: Daemon, tmp_path: Path
) -> None:
    open_page(page, web_daemon)
    page.wait_for_selector("#welcome:not([hidden])")
    assert "token=" not in page.url  # moved to sessionStorage, out of the address bar and history
    page.fill("#q", "a photo of a red circle")
    page.press("#q", "Enter")
    first = results(page, "text")
    assert names(first)[:RED_CIRCLES] == [n for n in names(first) if n.startswith("red_circle")], names(first)[:8]
    assert all(float(c["calibrated"]) > 0.5 for c in first[:RED_CIRCLES])
    wait_for_thumbnails(page, 12)
    page.wait_for_selector("#status-text strong")
    shot = tmp_path / "results.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 20_000

    liked = first[1]["path"]
    page.locator("#results .card").nth(1).locator(".like").click()
    similar = results(page, "similar")
    assert [c["path"] for c in similar] != [c["path"] for c in first]
    assert liked not in {c["path"] for c in similar}  # the example itself is left out
    assert names(similar)[0].startswith("red_circle"), names(similar)[:5]
    assert page.inner_text("#chip-label") == "Like " + Path(liked).name
    assert page.evaluate("document.activeElement.closest('.card').dataset.index") == "0"

    page.go_back()  # the search lives in the URL: Back is the text search again
    assert [c["path"] for c in results(page, "text")] == [c["path"] for c in first]


def test_a_video_result_shows_and_opens_at_its_moment(page: Any, web_daemon: Daemon) -> None:
    open_page(page, web_daemon, "#q=a+photo+of+a+blue+star&type=video")
    (video,) = results(page, "text")
    start = float(video["start"])
    assert video["kind"] == "video" and 6.0 <= start <= 10.0, video  # the blue star is on from 8 s to 16 s
    wait_for_thumbnails(page, 1)
    blue = page.eval_on_selector(
        "#results .thumb .pic",
        """img => {
            const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
            const g = c.getContext('2d'); g.drawImage(img, 0, 0);
            const d = g.getImageData(0, 0, c.width, c.height).data; let n = 0;
            for (let i = 0; i < d.length; i += 4) if (d[i + 2] > d[i] + 80 && d[i + 2] > d[i + 1] + 60) n++;
            return n / (d.length / 4);
        }""",
    )
    assert blue > 0.005, "the card shows the frame at the moment (a blue star), not the first frame"

    page.click("#results .card .thumb")
    page.wait_for_function("() => { const v = document.querySelector('#viewer video'); return v && v.readyState >= 1 }")
    now = page.evaluate("document.querySelector('#viewer video').currentTime")
    assert start - 0.3 <= now <= start + 1.5, (now, start)
    assert page.get_attribute("#viewer", "data-path") == video["path"]
    assert "0:0" in page.inner_text("#v-moment-text")
    page.keyboard.press("Escape")
    page.wait_for_selector("#viewer[open]", state="detached")
    assert page.evaluate("document.activeElement.classList.contains('thumb')")


def test_search_by_a_picked_image(page: Any, web_daemon: Daemon, tmp_path: Path) -> None:
    example = tmp_path / "example.png"  # not in the index: a new picture of a red circle
    save_image(render("red", "circle", rng=np.random.default_rng(99), size=(200, 150)), example, "png")
    open_page(page, web_daemon)
    page.set_input_files("#file", str(example))
    cards = results(page, "image")
    assert names(cards)[0].startswith("red_circle"), names(cards)[:5]
    assert page.inner_text("#chip-label") == "example.png"
    page.fill("#not", "circle")  # "not" terms: subtracting "circle" leaves red things of other shapes first
    page.press("#not", "Enter")
    page.wait_for_function("() => document.querySelector('#results .card').dataset.path.includes('/red_')")
    without = results(page, "image")
    assert not names(without)[0].startswith("red_circle"), names(without)[:5]


def test_weaker_results_wait_behind_a_fold(page: Any, web_daemon: Daemon) -> None:
    open_page(page, web_daemon, "#q=a+photo+of+a+red+circle")
    cards = results(page, "text")
    grid = page.locator("#results")
    matches, weak = int(grid.get_attribute("data-matches")), int(grid.get_attribute("data-weak"))
    assert matches == RED_CIRCLES and weak > 0 and matches + weak == len(cards), (matches, weak, len(cards))
    assert names(cards)[:matches] == [n for n in names(cards) if n.startswith("red_circle")]
    assert all(float(c["calibrated"]) >= 0.5 for c in cards[:matches])
    assert all(float(c["calibrated"]) < 0.5 for c in cards[matches:])
    assert page.locator("#results .card:visible").count() == matches
    assert page.inner_text("#fold .fold-label") == f"{weak} weaker results"
    assert page.get_attribute("#fold", "aria-expanded") == "false"
    assert page.inner_text("#summary strong") == f"{matches} matches"

    page.click("#fold")
    page.wait_for_selector("#results[data-fold=open]")
    assert page.locator("#results .card:visible").count() == matches + weak
    assert page.get_attribute("#fold", "aria-expanded") == "true"

    page.fill("#q", "a cat")  # a word the demo model never learned: nothing matches, all folded
    page.press("#q", "Enter")
    page.wait_for_selector("#results[data-state=ready][data-matches='0']")
    assert int(grid.get_attribute("data-weak")) > 0 and grid.get_attribute("data-fold") == "closed"
    assert page.locator("#results .card:visible").count() == 0
    assert "No good matches" in page.inner_text("#results .empty")


def test_keyboard_and_phone_width(page: Any, web_daemon: Daemon, tmp_path: Path) -> None:
    open_page(page, web_daemon)
    page.wait_for_selector("#welcome:not([hidden])")
    page.locator("body").click(position={"x": 5, "y": 300})
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "q"
    page.keyboard.type("a photo of a green square")
    page.keyboard.press("Enter")
    cards = results(page, "text")
    page.focus("#results .card .thumb")
    page.keyboard.press("ArrowRight")
    assert page.evaluate("document.activeElement.closest('.card').dataset.index") == "1"
    page.keyboard.press("Enter")
    page.wait_for_selector("#viewer[open]")
    assert page.get_attribute("#viewer", "data-path") == cards[1]["path"]
    page.keyboard.press("ArrowRight")
    assert page.get_attribute("#viewer", "data-path") == cards[2]["path"]
    page.keyboard.press("Escape")
    page.wait_for_selector("#viewer[open]", state="detached")
    page.eval_on_selector("#results .card", "card => { card.dataset.seen = 'yes' }")
    page.click("#more")  # the next page is added below the cards already shown
    page.wait_for_function("n => document.querySelectorAll('#results .card').length === n", arg=97)
    assert page.get_attribute("#results .card", "data-seen") == "yes" and page.is_hidden("#more")

    page.set_viewport_size({"width": 390, "height": 844})
    columns = "() => getComputedStyle(document.querySelector('#results')).gridTemplateColumns.split(' ').length"
    page.wait_for_function(f"() => ({columns})() === 2")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert page.is_visible("#filters-toggle") and not page.is_visible("#not")
    page.click("#filters-toggle")
    assert page.is_visible("#not")
    page.screenshot(path=str(tmp_path / "phone.png"))


# -- over HTTP, no browser -----------------------------------------------------------------------


def _http(daemon: Daemon) -> httpx.Client:
    assert daemon.client is not None
    info = daemon.client.info
    return httpx.Client(base_url=info.url, headers={"X-Mediasearch-Token": info.token}, timeout=30)


def _blue_share(jpeg: bytes) -> float:
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")).astype(int)
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    return float(((b > r + 80) & (b > g + 60)).mean())


def test_thumbnails_are_the_moment_cached_on_disk_with_etags(web_daemon: Daemon, web_library: Path) -> None:
    video = str(web_library / "videos" / "shapes.mp4")
    with _http(web_daemon) as http:
        at_star = http.get("/thumbnail", params={"path": video, "size": 160, "t": 10})
        at_start = http.get("/thumbnail", params={"path": video, "size": 160})
        assert at_star.status_code == at_start.status_code == 200
        assert _blue_share(at_star.content) > 0.005 > _blue_share(at_start.content)  # yellow triangle at 0 s
        tag = at_star.headers["etag"]
        assert "max-age" in at_star.headers["cache-control"]
        again = http.get("/thumbnail", params={"path": video, "size": 160, "t": 10}, headers={"If-None-Match": tag})
        assert again.status_code == 304 and not again.content
    cached = list((web_daemon.home / "cache" / "thumbnails").glob("*/*.jpg"))
    assert len(cached) >= 2


def test_media_serves_indexed_files_only_with_ranges(web_daemon: Daemon, web_library: Path) -> None:
    video = web_library / "videos" / "shapes.mp4"
    with _http(web_daemon) as http:
        part = http.get("/media", params={"path": str(video)}, headers={"Range": "bytes=100-199"})
        assert part.status_code == 206 and part.content == video.read_bytes()[100:200]
        assert part.headers["content-type"] == "video/mp4"
        assert part.headers["content-range"] == f"bytes 100-199/{video.stat().st_size}"
        assert http.get("/media", params={"path": "/etc/passwd"}).status_code == 404
        assert http.get("/media", params={"path": str(video) + "/../shapes.mp4"}).status_code == 200
        assert http.get("/media", params={"path": str(web_daemon.home / "daemon.json")}).status_code == 404
        anonymous = httpx.get(str(http.base_url.join("/media")), params={"path": str(video)})
        assert anonymous.status_code == 401


def test_query_by_uploaded_image_bytes(web_daemon: Daemon) -> None:
    buffer = io.BytesIO()
    render("blue", "star", rng=np.random.default_rng(5), size=(160, 120)).save(buffer, format="JPEG")
    data = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()
    with _http(web_daemon) as http:
        hits = http.post("/query", json={"terms": [{"kind": "image", "data": data}], "limit": 3}).json()
        assert Path(hits[0]["path"]).name.startswith("blue_star")
        bad = http.post("/query", json={"terms": [{"kind": "image", "data": "bm90IGFuIGltYWdl"}]})
        assert bad.status_code == 400 and "not a picture" in bad.json()["error"]
        wrong = http.post("/query", json={"terms": [{"kind": "text", "data": data}]})
        assert wrong.status_code == 422


def test_the_page_and_its_files_are_served_without_a_token(web_daemon: Daemon) -> None:
    assert web_daemon.client is not None
    url = web_daemon.client.info.url
    page = httpx.get(url + "/")
    assert page.status_code == 200 and "static/app.js" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["referrer-policy"] == "no-referrer"
    script = httpx.get(url + "/static/app.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert httpx.get(url + "/static/app.js", headers={"If-None-Match": script.headers["etag"]}).status_code == 304
    assert httpx.get(url + "/static/api.py").status_code == 404
    assert httpx.get(url + "/status").status_code == 401


# -- thumbnails, in-process ----------------------------------------------------------------------


def test_thumbnails_are_exif_rotated_and_sized(make_image: Callable[..., Path], tmp_path: Path) -> None:
    from PIL import Image

    from mediasearch.media.thumbnails import ThumbnailCache, make_thumbnail

    upright = make_image("rotated.jpg", size=(400, 200), exif_orientation=6, marker=True)
    thumb = Image.open(io.BytesIO(make_thumbnail(str(upright), "image", 100)))
    assert thumb.size == (50, 100)  # orientation 6: shown turned a quarter, portrait
    white = [(x, y) for x, y in [(45, 5), (5, 5), (45, 95)] if min(thumb.convert("RGB").getpixel((x, y))) > 230]
    assert white == [(45, 5)]  # the stored top-left corner, turned clockwise: now top-right
    cache = ThumbnailCache(tmp_path / "cache", memory_items=1, disk_items=1)
    first = cache.get(str(upright), "image", 64)
    assert cache.get(str(upright), "image", 64) == first
    cache.get(str(upright), "image", 32)
    assert len(list((tmp_path / "cache").glob("*/*.jpg"))) == 2 and cache.prune() == 1


def test_a_parsed_part_is_a_chip_and_removing_it_searches_without_it(page: Any, web_daemon: Daemon) -> None:
    open_page(page, web_daemon)
    page.wait_for_selector("#welcome:not([hidden])")
    page.fill("#q", "videos of a blue star")
    page.press("#q", "Enter")
    only_videos = results(page, "text")
    assert only_videos and {c["kind"] for c in only_videos} == {"video"}
    page.wait_for_selector("#reading:not([hidden])")
    assert page.inner_text("#reading .reading-text") == "“a blue star”"
    assert page.inner_text("#reading .chip.part .chip-label") == "Videos"
    page.click("#reading .chip.part[data-part=kind] .chip-x")
    page.wait_for_selector("#reading", state="hidden")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#results .card')].some(c => c.dataset.kind === 'image')"
    )
    assert "image" in {c["kind"] for c in results(page, "text")}
