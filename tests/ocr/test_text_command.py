"""``mediasearch text`` and ``Library.text``: the lines of a picture and of a video's frames."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mediasearch.ocr.text import words


def _words(result: dict[str, Any]) -> set[str]:
    return {w for line in result["lines"] for w in words(line["text"])}


def test_text_of_a_picture_read_now(cli: Any, make_text_picture: Any) -> None:
    picture = make_text_picture("sign.jpg", ["harbour", "bakery", "museum"])
    (result,) = cli.json("text", str(picture))
    assert result["path"] == str(picture) and result["kind"] == "image" and result["source"] == "read"
    assert {"harbour", "bakery", "museum"} <= _words(result)
    for line in result["lines"]:
        left, top, right, bottom = line["box"]
        assert 0 <= left < right <= 1 and 0 <= top < bottom <= 1
        assert 0.5 <= line["conf"] <= 1 and line["timestamp"] is None


def test_text_of_a_video_gives_the_times_of_the_slide(cli: Any, make_slide_video: Any) -> None:
    video = make_slide_video("talk.mp4", ["quarterly", "invoice", "summary"])
    (result,) = cli.json("text", str(video))
    assert result["kind"] == "video"
    slide = [line for line in result["lines"] if "invoice" in words(line["text"])]
    assert slide, result
    assert all(4.0 <= line["timestamp"] < 8.0 for line in slide)
    assert len(slide) == 1  # the slide held for 4 s is one line, at its first frame


def test_text_of_a_bad_file_is_one_line_and_the_others_still_print(
    cli: Any, make_text_picture: Any, make_broken: Any, tmp_path: Path
) -> None:
    good = make_text_picture("good.png", ["welcome"], size=64)
    bad = make_broken("bad.jpg", "truncated_jpeg")
    rows = cli.json("text", str(bad), str(good), str(tmp_path / "missing.jpg"))
    assert [("error" in r) for r in rows] == [True, False, True]
    assert "welcome" in _words(rows[1])
    result = cli("text", str(tmp_path / "missing.jpg"), ok=False)
    assert result.exit_code == 1 and "no such file" in result.output and "Traceback" not in result.output


def test_python_api_text(demo_settings: Any, make_text_picture: Any) -> None:
    from mediasearch import Library

    picture = make_text_picture("note.png", ["password", "network"], size=56, dark=True)
    with Library.open(home=demo_settings().home, model="demo") as lib:
        result = lib.text(picture)
    assert {"password", "network"} <= {w for line in result.lines for w in words(line.text)}
