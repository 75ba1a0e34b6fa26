"""decode: images (orientation, transparency, bit depth, draft, bombs) and video frame sampling."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import pytest
from PIL import Image

from mediasearch.errors import MediaError
from mediasearch.media import video
from mediasearch.media.decode import NEUTRAL_GREY, MediaMeta, load_image, plan_timestamps, sample_video

RED = (200, 30, 30)


def pixel(image: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    value = image.getpixel(xy)
    assert isinstance(value, tuple)
    return tuple(int(v) for v in value)


def close(actual: tuple[int, ...], expected: tuple[int, ...], tol: int = 12) -> bool:
    return all(abs(a - e) <= tol for a, e in zip(actual, expected, strict=True))


def one_line_error(excinfo: pytest.ExceptionInfo[MediaError]) -> str:
    message = str(excinfo.value)
    assert message and "\n" not in message
    return message


# ------------------------------------------------------------------------------------------ images


@pytest.mark.parametrize("name", ["a.jpg", "a.jpeg", "a.png", "a.webp", "a.gif", "a.bmp", "a.tif"])
def test_common_formats_decode_to_rgb(make_image: Callable[..., Path], name: str) -> None:
    image, meta = load_image(str(make_image(name, color=RED)))
    assert image.mode == "RGB"
    assert image.size == (64, 48)
    assert close(pixel(image, (32, 24)), RED)
    assert meta == MediaMeta(width=64, height=48, date=None, camera=None, duration=None)


def test_returned_image_outlives_the_file(make_image: Callable[..., Path]) -> None:
    path = make_image("a.png")
    image, _ = load_image(str(path))
    path.unlink()
    assert len(image.tobytes()) == 64 * 48 * 3


@pytest.mark.parametrize(("orientation", "white_corner"), [(6, (47, 0)), (8, (0, 63)), (3, (63, 47))])
def test_exif_orientation_is_applied(
    make_image: Callable[..., Path], orientation: int, white_corner: tuple[int, int]
) -> None:
    path = make_image("o.jpg", size=(64, 48), exif_orientation=orientation, marker=True)
    image, meta = load_image(str(path))
    turned = orientation in (6, 8)
    assert image.size == ((48, 64) if turned else (64, 48))
    assert (meta.width, meta.height) == image.size
    assert close(pixel(image, white_corner), (255, 255, 255))  # the stored top-left, moved


@pytest.mark.parametrize(("mode", "name"), [("RGBA", "a.png"), ("LA", "a.png"), ("P", "a.png"), ("P", "a.gif")])
def test_transparent_areas_are_neutral_grey(make_image: Callable[..., Path], mode: str, name: str) -> None:
    image, _ = load_image(str(make_image(name, mode=mode, color=RED)))
    assert image.mode == "RGB"
    assert image.getpixel((60, 24)) == NEUTRAL_GREY  # right half: fully transparent
    assert image.getpixel((4, 24)) != NEUTRAL_GREY


def test_rgba_webp_transparency(make_image: Callable[..., Path]) -> None:
    image, _ = load_image(str(make_image("a.webp", mode="RGBA", color=RED)))
    assert close(pixel(image, (60, 24)), NEUTRAL_GREY, 2)
    assert close(pixel(image, (4, 24)), RED)


@pytest.mark.parametrize("name", ["c.jpg", "c.tif"])
def test_cmyk_is_converted(make_image: Callable[..., Path], name: str) -> None:
    image, _ = load_image(str(make_image(name, mode="CMYK", color=RED)))
    assert image.mode == "RGB"
    assert close(pixel(image, (32, 24)), RED)


@pytest.mark.parametrize(("value16", "value8"), [(32768, 128), (65535, 255), (4112, 16), (0, 0)])
def test_16bit_png_is_scaled_not_clipped(make_image: Callable[..., Path], value16: int, value8: int) -> None:
    image, _ = load_image(str(make_image("g.png", mode="I;16", color=value16)))
    assert image.getpixel((10, 10)) == (value8,) * 3


def test_animated_gif_and_multipage_tiff_give_the_first_frame(make_image: Callable[..., Path]) -> None:
    blue = (30, 30, 220)
    for name in ("anim.gif", "pages.tif", "anim.webp"):
        path = make_image(name, color=RED, transparent=False, extra_frames=[blue, blue])
        image, _ = load_image(str(path))
        assert close(pixel(image, (32, 24)), RED), name


def test_large_jpeg_is_decoded_at_reduced_size(make_image: Callable[..., Path]) -> None:
    path = make_image("big.jpg", size=(2000, 1500), marker=True)
    image, meta = load_image(str(path), target=224)
    assert 224 <= min(image.size) < 448
    assert image.size[0] / image.size[1] == pytest.approx(2000 / 1500, rel=0.02)
    assert (meta.width, meta.height) == (2000, 1500)  # the original size, not the decoded one
    assert close(pixel(image, (5, 5)), (255, 255, 255))

    bigger, _ = load_image(str(path), target=600)
    assert 600 <= min(bigger.size) < 1200


def test_large_png_is_reduced_and_small_images_are_not_enlarged(make_image: Callable[..., Path]) -> None:
    image, meta = load_image(str(make_image("big.png", size=(1200, 1000))), target=224)
    assert 224 <= min(image.size) < 448
    assert (meta.width, meta.height) == (1200, 1000)
    small, _ = load_image(str(make_image("small.png", size=(100, 80))), target=224)
    assert small.size == (100, 80)


def test_exif_date_and_camera(make_image: Callable[..., Path]) -> None:
    path = make_image("d.jpg", exif_date="2021:06:15 12:30:00", exif_camera=("Canon", "Canon EOS 5D"))
    _, meta = load_image(str(path))
    assert meta.date == datetime(2021, 6, 15, 12, 30).timestamp()  # local time
    assert meta.camera == "Canon EOS 5D"
    _, meta = load_image(str(make_image("s.jpg", exif_camera=("SONY", "ILCE-7M3"))))
    assert meta.camera == "SONY ILCE-7M3"
    assert meta.date is None


def test_placeholder_exif_date_is_ignored(make_image: Callable[..., Path]) -> None:
    _, meta = load_image(str(make_image("z.jpg", exif_date="0000:00:00 00:00:00")))
    assert meta.date is None


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("bomb", "image too large (decompression bomb guard): 30000x30000, 4.0 GB to decode"),
        # 100 megapixels of grey fit the decoders' memory budget: the empty file is then truncated
        ("bomb_warning", "truncated image"),
        ("truncated_jpeg", "truncated image"),
        ("text_as_jpg", "cannot identify image file"),
        ("empty", "empty file (0 bytes)"),
        ("random_bytes", "cannot identify image file"),
    ],
)
def test_broken_images_raise_one_line_media_error(
    make_broken: Callable[[str, str], Path], kind: str, message: str
) -> None:
    path = make_broken(f"broken-{kind}.png" if kind.startswith("bomb") else f"broken-{kind}.jpg", kind)
    with pytest.raises(MediaError) as excinfo:
        load_image(str(path))
    assert one_line_error(excinfo) == message


def test_the_bomb_guard_bounds_memory_not_pixels(
    make_image: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same 64x48 picture is refused as a PNG (decoded whole) under a budget that a JPEG of it
    fits (decoded at 1/8 scale by the DCT), and the message says what it would have taken."""
    from mediasearch.media import memory

    png = make_image("a.png", size=(640, 480))
    jpeg = make_image("a.jpg", size=(640, 480))
    monkeypatch.setattr(memory, "DECODE_BUDGET_BYTES", memory.decode_cost((640, 480), "RGB") - 1)
    with pytest.raises(MediaError, match=r"decompression bomb guard\): 640x480, 0.0 GB to decode$"):
        load_image(str(png), target=32)
    image, meta = load_image(str(jpeg), target=32)
    assert (meta.width, meta.height) == (640, 480) and min(image.size) < 480


def test_unreadable_paths_raise_media_error(tmp_path: Path) -> None:
    with pytest.raises(MediaError) as excinfo:
        load_image(str(tmp_path / "missing.jpg"))
    assert one_line_error(excinfo) == "cannot read file: no such file or directory"
    with pytest.raises(MediaError):
        load_image(str(tmp_path))


# ----------------------------------------------------------------------------------------- planning


@pytest.mark.parametrize(
    ("duration", "interval", "max_frames", "expected"),
    [
        (6.0, 2.0, 600, [0.0, 2.0, 4.0]),
        (6.1, 2.0, 600, [0.0, 2.0, 4.0, 6.0]),
        (0.4, 2.0, 600, [0.0]),
        (0.0, 2.0, 600, [0.0]),
        (float("nan"), 2.0, 600, [0.0]),
        (100.0, 2.0, 4, [0.0, 25.0, 50.0, 75.0]),
        (3.0, 0.5, 600, [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]),
    ],
)
def test_plan_timestamps(duration: float, interval: float, max_frames: int, expected: list[float]) -> None:
    assert plan_timestamps(duration, interval, max_frames) == expected


def test_plan_timestamps_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        plan_timestamps(10, 0, 5)
    with pytest.raises(ValueError):
        plan_timestamps(10, 1, 0)


# ------------------------------------------------------------------------------------------- videos


def frame_color(image: Image.Image) -> tuple[int, ...]:
    """The colour in the lower middle of a frame (make_video's noise and marker sit at the top)."""
    width, height = image.size
    return pixel(image, (width // 2, height * 3 // 4))


def test_frames_come_at_the_planned_times_with_the_right_colours(
    make_video: Callable[..., Path], video_color_at: Callable[..., tuple[int, int, int]]
) -> None:
    sample = sample_video(str(make_video("v.mp4")), interval=2.0)
    assert sample.error is None
    assert [f.timestamp for f in sample.frames] == [0.0, 2.0, 4.0]
    for frame in sample.frames:
        assert close(frame_color(frame.image), video_color_at(frame.timestamp)), frame.timestamp
    assert sample.meta == MediaMeta(width=160, height=120, date=None, camera=None, duration=6.0)


def test_interval_and_max_frames(
    make_video: Callable[..., Path], video_color_at: Callable[..., tuple[int, int, int]]
) -> None:
    path = str(make_video("v.mp4"))
    every_second = sample_video(path, interval=1.0)
    assert [f.timestamp for f in every_second.frames] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert [close(frame_color(f.image), video_color_at(f.timestamp)) for f in every_second.frames] == [True] * 6
    spread = sample_video(path, interval=0.5, max_frames=4)
    assert [f.timestamp for f in spread.frames] == [0.0, 1.5, 3.0, 4.5]


def test_frame_timestamps_are_real_frame_times(make_video: Callable[..., Path]) -> None:
    # 5 fps: frames at 0, 0.2, 0.4 ...; asking for every 0.7 s gives the frames shown then.
    sample = sample_video(str(make_video("v.mp4", seconds=2.0, fps=5)), interval=0.7)
    assert [f.timestamp for f in sample.frames] == pytest.approx([0.0, 0.6, 1.4])


def test_short_clip_gives_one_frame(make_video: Callable[..., Path]) -> None:
    sample = sample_video(str(make_video("short.mp4", seconds=0.25, fps=8)), interval=2.0)
    assert [f.timestamp for f in sample.frames] == [0.0]
    assert sample.meta.duration == pytest.approx(0.25)


def test_frames_are_decoded_small_with_the_aspect_kept(make_video: Callable[..., Path]) -> None:
    sample = sample_video(str(make_video("hd.mp4", seconds=1.0, size=(640, 360))), target=224)
    assert {f.image.size for f in sample.frames} == {(398, 224)}
    assert (sample.meta.width, sample.meta.height) == (640, 360)
    small = sample_video(str(make_video("sd.mp4", seconds=1.0)), target=224)
    assert small.frames[0].image.size == (160, 120)  # never enlarged


def test_display_rotation_is_applied(make_video: Callable[..., Path]) -> None:
    path = make_video("portrait.mp4", seconds=1.0, size=(160, 120), rotation=90, marker=True)
    sample = sample_video(str(path))
    image = sample.frames[0].image
    assert image.size == (120, 160)
    assert (sample.meta.width, sample.meta.height) == (120, 160)
    # 90 degrees counter-clockwise: the coded top-left corner is shown bottom-left.
    assert close(pixel(image, (3, 156)), (255, 255, 255))
    assert not close(pixel(image, (3, 3)), (255, 255, 255))


def test_creation_time_becomes_the_date(make_video: Callable[..., Path]) -> None:
    path = make_video("dated.mp4", seconds=0.5, creation_time="2022-03-04T05:06:07.000000Z")
    sample = sample_video(str(path))
    assert sample.meta.date == datetime(2022, 3, 4, 5, 6, 7, tzinfo=timezone.utc).timestamp()


def test_pyav_path_matches_decord(make_video: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Where decord is missing (no wheel for the platform) or cannot index a file, PyAV decodes."""
    path = str(make_video("r.mp4", size=(640, 480), rotation=90, marker=True))
    with_decord = sample_video(path, interval=1.5)

    def no_decord() -> object:
        raise ImportError("No module named 'decord'")

    monkeypatch.setattr(video, "_decord", no_decord)
    with_pyav = sample_video(path, interval=1.5)
    assert with_pyav.error is None
    assert with_pyav.meta == with_decord.meta
    assert [f.timestamp for f in with_pyav.frames] == [f.timestamp for f in with_decord.frames]
    for a, b in zip(with_pyav.frames, with_decord.frames, strict=True):
        assert a.image.size == b.image.size == (224, 299)
        for xy in [(3, 3), (3, 295), (200, 200)]:
            assert close(pixel(a.image, xy), pixel(b.image, xy), 16), (a.timestamp, xy)
        # Both turned for display (90 degrees counter-clockwise): the coded top-left is shown bottom-left.
        assert close(pixel(a.image, (3, 295)), (255, 255, 255)) and not close(pixel(a.image, (3, 3)), (255, 255, 255))


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        # decord 0.6 cannot index it (PyAV reads on); decord2 can, and reads frame by frame up to the damage
        ("truncated_mp4", ("video truncated or corrupt", "video partly unreadable")),
        ("damaged_mp4", ("video partly unreadable",)),  # decord's batch fails: frame by frame instead
    ],
)
def test_damaged_video_keeps_the_frames_it_could_read(
    make_broken: Callable[[str, str], Path],
    video_color_at: Callable[..., tuple[int, int, int]],
    capfd: pytest.CaptureFixture[str],
    kind: str,
    reason: tuple[str, ...],
) -> None:
    sample = sample_video(str(make_broken(f"{kind}.mp4", kind)), interval=1.0)
    times = [f.timestamp for f in sample.frames]
    assert times[0] == 0.0 and times == sorted(times) and len(times) < 6
    for frame in sample.frames:
        assert close(frame_color(frame.image), video_color_at(frame.timestamp)), frame.timestamp
    assert sample.error and sample.error.startswith(reason) and "\n" not in sample.error
    assert capfd.readouterr().err == ""  # decord's and FFmpeg's logs stay quiet


@pytest.mark.parametrize("kind", ["mp4_no_moov", "empty", "random_bytes", "text_as_jpg"])
def test_unreadable_video_raises_one_line_media_error(
    make_broken: Callable[[str, str], Path], capfd: pytest.CaptureFixture[str], kind: str
) -> None:
    with pytest.raises(MediaError) as excinfo:
        sample_video(str(make_broken(f"{kind}.mp4", kind)))
    if kind == "empty":
        assert one_line_error(excinfo) == "empty file (0 bytes)"
    else:
        assert one_line_error(excinfo).startswith("cannot open video: ")
    assert capfd.readouterr().err == ""


def test_missing_video_raises_media_error(tmp_path: Path) -> None:
    with pytest.raises(MediaError) as excinfo:
        sample_video(str(tmp_path / "gone.mp4"))
    assert one_line_error(excinfo) == "cannot open video: no such file or directory"
