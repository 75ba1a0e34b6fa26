"""The shapes renderer, the shapes video writer, and the contrastive training code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mediasearch import shapes


def _shape_pixels(img: Image.Image, colour: str) -> np.ndarray:
    """Pixels within 60 (per channel) of the nominal colour."""
    pixels = np.asarray(img, dtype=np.int16)
    return (np.abs(pixels - np.asarray(shapes.COLOURS[colour])) <= 60).all(axis=-1)


def test_classes_cover_every_colour_and_shape() -> None:
    assert len(shapes.CLASSES) == 24
    assert set(shapes.CLASSES) == {(c, s) for c in shapes.COLOURS for s in shapes.SHAPES}
    assert shapes.class_name("red", "circle") == "red circle"


@pytest.mark.parametrize("colour,shape", [("red", "circle"), ("blue", "star"), ("yellow", "triangle")])
def test_render_draws_the_shape_in_its_colour(colour: str, shape: str) -> None:
    img = shapes.render(colour, shape, rng=np.random.default_rng(1), size=(300, 200), background="plain")
    assert img.mode == "RGB" and img.size == (300, 200)
    covered = _shape_pixels(img, colour).mean()
    # A fifth to three quarters of the short side: between ~1% and ~45% of this frame.
    assert 0.005 < covered < 0.5
    corners = np.asarray(img)[[0, 0, -1, -1], [0, -1, 0, -1]].astype(int)
    saturation = corners.max(axis=1) - corners.min(axis=1)
    assert (saturation < 60).all()  # a grey, not one of the six colours


def test_render_random_sizes_stay_in_range_and_are_seeded() -> None:
    rng = np.random.default_rng(7)
    sizes = [shapes.random_size(rng) for _ in range(200)]
    assert all(200 <= side <= 1600 for size in sizes for side in size)
    assert all(max(size) / min(size) <= shapes.MAX_ASPECT for size in sizes)
    a = shapes.render("green", "square", rng=np.random.default_rng(3))
    b = shapes.render("green", "square", rng=np.random.default_rng(3))
    assert a.size == b.size and np.array_equal(np.asarray(a), np.asarray(b))


def test_outlined_shape_covers_less_than_filled_and_contrast_fades_it() -> None:
    kwargs = {"size": (256, 256), "background": "plain"}
    filled = shapes.render("purple", "circle", rng=np.random.default_rng(5), **kwargs)
    outlined = shapes.render("purple", "circle", rng=np.random.default_rng(5), outlined=True, **kwargs)
    faded = shapes.render("purple", "circle", rng=np.random.default_rng(5), contrast=0.2, **kwargs)
    assert _shape_pixels(outlined, "purple").sum() < 0.7 * _shape_pixels(filled, "purple").sum()
    assert _shape_pixels(faded, "purple").sum() < 0.1 * _shape_pixels(filled, "purple").sum()
    textured = shapes.render("red", "star", rng=np.random.default_rng(0), outlined=True, background="textured",
                             size=(200, 200))
    assert textured.size == (200, 200)


def test_render_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="colour"):
        shapes.render("pink", "circle", rng=np.random.default_rng(0), size=(200, 200))
    with pytest.raises(ValueError, match="shape"):
        shapes.render("red", "hexagon", rng=np.random.default_rng(0), size=(200, 200))


def test_make_library_names_formats_and_balance(tmp_path: Path) -> None:
    written = shapes.make_library(tmp_path, 48, seed=2)
    assert len(written) == 48
    path, colour, shape = written[3]
    assert path.name.startswith(f"{colour}_{shape}_0003.")
    formats = {p.suffix for p, _, _ in written}
    assert formats == {".jpg", ".png", ".webp"}
    counts: dict[tuple[str, str], set[str]] = {}
    for p, c, s in written:
        counts.setdefault((c, s), set()).add(p.suffix)
        with Image.open(p) as img:
            assert img.format == {".jpg": "JPEG", ".png": "PNG", ".webp": "WEBP"}[p.suffix]
    assert len(counts) == 24 and all(len(f) == 2 for f in counts.values())  # formats rotate per round


def test_shapes_video_has_the_right_length_and_keyframes(tmp_path: Path) -> None:
    decord = pytest.importorskip("decord")
    path = tmp_path / "shapes.mp4"
    shapes.write_shapes_video(path, [("red", "circle"), ("blue", "square")], seconds_per_segment=2.0, fps=8)
    reader = decord.VideoReader(str(path))
    assert len(reader) == 32
    assert reader.get_avg_fps() == pytest.approx(8.0)
    first, last = reader[4].asnumpy(), reader[28].asnumpy()
    assert first.shape == (240, 320, 3)
    assert _shape_pixels(Image.fromarray(first), "red").mean() > 0.005
    assert _shape_pixels(Image.fromarray(last), "blue").mean() > 0.005
    assert list(reader.get_key_indices()) == [0, 16]
