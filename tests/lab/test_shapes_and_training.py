"""The shapes renderer, the shapes video writer, and the contrastive training code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mediasearch.lab import shapes


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
    def purple_circle(outlined: bool = False, contrast: float = 1.0) -> Image.Image:
        return shapes.render("purple", "circle", rng=np.random.default_rng(5), size=(256, 256),
                             background="plain", outlined=outlined, contrast=contrast)

    filled, outlined, faded = purple_circle(), purple_circle(outlined=True), purple_circle(contrast=0.2)
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


# ---------------------------------------------------------------- training code

def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=-1)


def test_clip_loss_prefers_matched_pairs() -> None:
    from mediasearch.lab.train import clip_loss

    gen = torch.Generator().manual_seed(0)
    images = _unit(torch.randn(16, 32, generator=gen))
    texts = _unit(images + 0.05 * torch.randn(16, 32, generator=gen))
    scale = torch.tensor(20.0)
    matched = clip_loss(images, texts, scale)
    shuffled = clip_loss(images, texts[torch.randperm(16, generator=gen)], scale)
    assert float(matched) < 0.2 < float(shuffled)
    # An identity mask is the plain one-positive-per-row loss.
    assert torch.allclose(clip_loss(images, texts, scale, torch.eye(16, dtype=torch.bool)), matched)


def test_clip_loss_spreads_the_target_over_positives() -> None:
    from mediasearch.lab.train import clip_loss

    images = _unit(torch.tensor([[1.0, 0.2], [1.0, -0.2], [-1.0, 0.0]]))
    swapped = images[[1, 0, 2]]  # texts 0 and 1 exchanged: both describe images 0 and 1
    scale = torch.tensor(30.0)
    same_class = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.bool)
    # One positive per row: the swap is a mistake. Positives by class: the swap changes nothing.
    assert float(clip_loss(images, swapped, scale)) > float(clip_loss(images, images, scale)) + 0.1
    masked = clip_loss(images, images, scale, same_class)
    assert torch.allclose(clip_loss(images, swapped, scale, same_class), masked)
    # A uniform target over two positives can't go below its entropy, ln 2 (rows 0 and 1 of 3).
    assert float(masked) >= 2 / 3 * np.log(2) - 1e-4
    with pytest.raises(ValueError, match="shape"):
        clip_loss(images, images, scale, torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="positive"):
        clip_loss(images, images, scale, torch.zeros(3, 3, dtype=torch.bool))


def test_cosine_schedule_warms_up_then_decays() -> None:
    from mediasearch.lab.train import TrainConfig, cosine_lr

    config = TrainConfig(epochs=2, steps_per_epoch=10, lr=1.0, warmup_steps=4, accum_steps=2)
    assert config.total_steps == 10
    rates = [cosine_lr(step, config) for step in range(config.total_steps)]
    assert rates[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in zip(rates[3:], rates[4:], strict=False))
    assert rates[-1] < 0.1


def test_training_a_tiny_clip_lowers_the_loss() -> None:
    import open_clip

    from mediasearch.lab.train import Batch, TrainConfig, batch_loss, train_contrastive

    torch.manual_seed(0)
    model = open_clip.CLIP(
        embed_dim=16,
        vision_cfg={"image_size": 16, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16},
        text_cfg={"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1},
    )
    gen = torch.Generator().manual_seed(1)
    # Four "classes": a class is a mean image and a fixed token sequence; batches repeat classes.
    means = torch.randn(4, 3, 16, 16, generator=gen)
    class_tokens = torch.randint(1, 64, (4, 8), generator=gen)

    def batches(epoch: int) -> list[Batch]:
        out: list[Batch] = []
        for _ in range(4):
            cls = torch.randint(0, 4, (12,), generator=gen)
            images = means[cls] + 0.3 * torch.randn(12, 3, 16, 16, generator=gen)
            out.append((images, class_tokens[cls], cls[:, None] == cls[None, :]))
        return out

    probe = batches(0)[0]
    with torch.no_grad():
        before = float(batch_loss(model, probe, "cpu"))
    config = TrainConfig(epochs=6, steps_per_epoch=4, lr=3e-3, warmup_steps=2, accum_steps=2)
    losses = train_contrastive(model, batches, config)
    with torch.no_grad():
        after = float(batch_loss(model, probe, "cpu"))
    assert len(losses) == 6 and losses[-1] < losses[0]
    assert after < 0.7 * before
    assert float(model.logit_scale.detach().exp()) <= 100.0 + 1e-3
