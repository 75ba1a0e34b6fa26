"""The synthetic "shapes" domain: one coloured shape on a quiet background.

Used to train the bundled demo model (``scripts/train_demo_model.py``), by ``mediasearch demo`` to
build a sample library, and by the tests to make real media files. Only numpy, Pillow and PyAV here:
no torch, so importing this module is cheap.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (40, 170, 60),
    "blue": (40, 70, 220),
    "yellow": (240, 220, 40),
    "purple": (140, 50, 170),
    "orange": (250, 140, 20),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
CLASSES: list[tuple[str, str]] = [(c, s) for c in COLOURS for s in SHAPES]
BACKGROUNDS: tuple[str, ...] = ("plain", "gradient", "textured")

COLOUR_JITTER = 20
MIN_SIDE, MAX_SIDE = 200, 1600
MAX_ASPECT = 2.5  # wider frames make a fifth-of-the-short-side shape too thin to see at 96 px
MAX_ROTATION = 20.0
FORMATS: dict[str, str] = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}


def class_name(colour: str, shape: str) -> str:
    """The caption-style name of a class: ``class_name("red", "circle") == "red circle"``."""
    return f"{colour} {shape}"


def random_size(rng: np.random.Generator) -> tuple[int, int]:
    """A (width, height) log-uniform in 200..1600 px per side, aspect ratio at most 2.5."""
    while True:
        w, h = (int(round(math.exp(rng.uniform(math.log(MIN_SIDE), math.log(MAX_SIDE))))) for _ in "wh")
        if max(w, h) / min(w, h) <= MAX_ASPECT:
            return w, h


def _grey(rng: np.random.Generator) -> tuple[int, int, int]:
    """A grey or barely tinted tone: never close to one of the six saturated colours."""
    level = rng.uniform(25.0, 235.0)
    r, g, b = (int(np.clip(level + rng.uniform(-8.0, 8.0), 0, 255)) for _ in range(3))
    return r, g, b


def _background(kind: str, w: int, h: int, rng: np.random.Generator) -> Image.Image:
    """An RGB background: plain, a linear gradient between two greys, or blotchy texture."""
    if kind == "plain":
        return Image.new("RGB", (w, h), _grey(rng))
    if kind == "gradient":
        a, b = _grey(rng), _grey(rng)
        angle = rng.uniform(0.0, 2 * math.pi)
        # A linear ramp computed on a coarse grid and resized: exact for a linear function, and cheap.
        gw, gh = max(2, w // 8), max(2, h // 8)
        t = np.cos(angle) * np.linspace(0, 1, gw)[None, :] + np.sin(angle) * np.linspace(0, 1, gh)[:, None]
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        ramp = Image.fromarray((t * 255).astype(np.uint8), mode="L").resize((w, h), Image.Resampling.BILINEAR)
        return Image.composite(Image.new("RGB", (w, h), b), Image.new("RGB", (w, h), a), ramp)
    if kind == "textured":
        base = np.asarray(_grey(rng), dtype=np.float32)
        coarse = rng.normal(0.0, 35.0, size=(int(rng.integers(4, 12)), int(rng.integers(4, 12))))
        blotch = Image.fromarray(coarse.astype(np.float32), mode="F").resize((w, h), Image.Resampling.BICUBIC)
        fine = rng.standard_normal(size=(h, w), dtype=np.float32) * 12.0
        pixels = base[None, None, :] + (np.asarray(blotch) + fine)[..., None]
        return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB")
    raise ValueError(f"unknown background {kind!r}; expected one of {', '.join(BACKGROUNDS)}")


def _add_noise(img: Image.Image, sigma: float, rng: np.random.Generator) -> Image.Image:
    """Add grey Gaussian sensor noise (the same offset on all three channels of a pixel)."""
    w, h = img.size
    # A 256 px tile repeated over the frame: indistinguishable from fresh noise, and far cheaper.
    tile = np.clip(128.0 + sigma * rng.standard_normal(size=(256, 256), dtype=np.float32), 0, 255)
    noise = np.tile(tile.astype(np.uint8), (h // 256 + 1, w // 256 + 1))[:h, :w]
    grain = Image.fromarray(np.ascontiguousarray(noise), mode="L")
    return ImageChops.add(img, Image.merge("RGB", (grain, grain, grain)), scale=1.0, offset=-128)


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Vertices of a square/triangle/star of circumradius r around (cx, cy), rotated by angle (rad)."""
    if shape == "square":
        radii, start = [r] * 4, math.pi / 4
    elif shape == "triangle":
        radii, start = [r] * 3, -math.pi / 2
    elif shape == "star":
        radii, start = [r, r * 0.42] * 5, -math.pi / 2
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {', '.join(SHAPES)}")
    steps = [start + angle + 2 * math.pi * i / len(radii) for i in range(len(radii))]
    return [(cx + rad * math.cos(t), cy + rad * math.sin(t)) for rad, t in zip(radii, steps, strict=True)]


def _shape_mask(
    shape: str, size: tuple[int, int], centre: tuple[float, float], extent: float, angle: float, outline: int
) -> Image.Image:
    """An "L" mask of the shape; ``extent`` is its bounding size, ``outline`` a stroke width (0: filled)."""
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    cx, cy = centre
    fill, width = (None, outline) if outline else (255, 0)
    if shape == "circle":
        r = extent / 2
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill, outline=255 if outline else None, width=width)
        return mask
    # Polygons: pick the circumradius so the unrotated shape spans `extent` (squares: side = extent).
    r = extent / math.sqrt(2) if shape == "square" else extent / 2
    points = _polygon(shape, cx, cy, r, angle)
    if outline:
        draw.line([*points, points[0], points[1]], fill=255, width=width, joint="curve")
    else:
        draw.polygon(points, fill=255)
    return mask


def _shape_colour(colour: str, rng: np.random.Generator) -> np.ndarray:
    if colour not in COLOURS:
        raise ValueError(f"unknown colour {colour!r}; expected one of {', '.join(COLOURS)}")
    nominal = np.asarray(COLOURS[colour], dtype=np.float64)
    return np.clip(nominal + rng.uniform(-COLOUR_JITTER, COLOUR_JITTER, size=3), 0, 255)


def render(
    colour: str,
    shape: str,
    *,
    rng: np.random.Generator,
    size: tuple[int, int] | None = None,
    outlined: bool = False,
    background: str | None = None,
    contrast: float = 1.0,
) -> Image.Image:
    """Render one (colour, shape) scene as an RGB image; ``size`` is (width, height), random if None."""
    w, h = size if size is not None else random_size(rng)
    kind = background or ("plain" if rng.random() < 0.5 else "gradient")
    bg = _background(kind, w, h, rng)
    fill = _shape_colour(colour, rng)
    if contrast != 1.0:
        mean_bg = np.asarray(bg.resize((8, 8), Image.Resampling.BOX), dtype=np.float64).reshape(-1, 3).mean(0)
        fill = np.clip(mean_bg + contrast * (fill - mean_bg), 0, 255)

    short = min(w, h)
    extent = rng.uniform(0.2, 0.75) * short
    # A rotated square/star reaches a little past `extent`; keep the whole shape in the frame.
    half = min(extent / 2 * (1.45 if shape in ("square", "star") else 1.05), short / 2)
    centre = (rng.uniform(half, w - half), rng.uniform(half, h - half))
    angle = math.radians(rng.uniform(-MAX_ROTATION, MAX_ROTATION))
    stroke = max(2, int(round(extent * rng.uniform(0.06, 0.12)))) if outlined else 0
    mask = _shape_mask(shape, (w, h), centre, extent, angle, stroke)

    r, g, b = (int(round(v)) for v in fill)
    img = Image.composite(Image.new("RGB", (w, h), (r, g, b)), bg, mask)
    img = _add_noise(img, rng.uniform(1.0, 8.0), rng)
    if rng.random() < 0.25:
        img = img.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.5, 2.0) * short / 200))
    return img


def save_image(
    img: Image.Image, path: Path | str | io.BytesIO, fmt: str, *, rng: np.random.Generator | None = None
) -> None:
    """Write ``img`` as JPEG, PNG or WebP (``fmt``: jpg/jpeg/png/webp); lossy quality from ``rng`` if given."""
    pil_format = FORMATS.get(fmt.lower().lstrip("."))
    if pil_format is None:
        raise ValueError(f"unsupported image format {fmt!r}; expected one of {', '.join(FORMATS)}")
    quality = int(rng.integers(60, 96)) if rng is not None else 85
    if pil_format == "PNG":
        img.save(path, format="PNG", compress_level=1)
    elif pil_format == "WEBP":
        img.save(path, format="WEBP", quality=quality, method=2)
    else:
        img.save(path, format="JPEG", quality=quality)


def make_library(
    folder: Path,
    n: int,
    seed: int,
    *,
    formats: Sequence[str] = ("jpg", "png", "webp"),
    outlined: bool = False,
    background: str | None = None,
    class_folders: bool = False,
) -> list[tuple[Path, str, str]]:
    """Write ``n`` images balanced over the 24 classes into ``folder``; returns (path, colour, shape).

    ``background`` is passed to :func:`render`; ``class_folders`` puts each image in ``<colour>_<shape>/``
    (the layout ``mediasearch finetune`` and ``eval zeroshot`` read labels from).
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written: list[tuple[Path, str, str]] = []
    for i in range(n):
        colour, shape = CLASSES[i % len(CLASSES)]
        # Rotate formats per round of classes so that every class appears in every format.
        fmt = formats[(i + i // len(CLASSES)) % len(formats)]
        path = folder / f"{colour}_{shape}_{i:04d}.{fmt}"
        if class_folders:
            path = folder / f"{colour}_{shape}" / path.name
            path.parent.mkdir(exist_ok=True)
        save_image(render(colour, shape, rng=rng, outlined=outlined, background=background), path, fmt, rng=rng)
        written.append((path, colour, shape))
    return written


def _jitter_frame(base: np.ndarray, shift: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A video frame: the scene shifted by a few pixels with fresh sensor noise."""
    frame = np.roll(base, shift, axis=(0, 1)).astype(np.int16)
    frame += rng.integers(-3, 4, size=frame.shape[:2] + (1,), dtype=np.int16)
    return np.clip(frame, 0, 255).astype(np.uint8)


def write_shapes_video(
    path: Path,
    segments: Sequence[tuple[str, str]],
    *,
    seconds_per_segment: float = 8.0,
    fps: int = 8,
    size: tuple[int, int] = (320, 240),
    seed: int = 0,
) -> None:
    """Write an H.264 MP4 where segment i shows ``segments[i]`` (colour, shape) for the given seconds."""
    import av  # PyAV is only needed for videos

    w, h = size
    if w % 2 or h % 2:
        raise ValueError(f"video size must be even for yuv420p, got {w}x{h}")
    rng = np.random.default_rng(seed)
    frames_per_segment = int(round(seconds_per_segment * fps))
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.gop_size = max(1, 2 * fps)  # a keyframe every 2 s keeps seeking cheap
        stream.options = {"g": str(2 * fps), "keyint_min": str(2 * fps), "sc_threshold": "0", "crf": "23"}
        for colour, shape in segments:
            base = np.asarray(render(colour, shape, rng=rng, size=size, background="plain"))
            for k in range(frames_per_segment):
                shift = (int(round(2 * math.sin(k / 5))), int(round(2 * math.cos(k / 7))))
                frame = av.VideoFrame.from_ndarray(_jitter_frame(base, shift, rng), format="rgb24")
                container.mux(stream.encode(frame))
        container.mux(stream.encode(None))

