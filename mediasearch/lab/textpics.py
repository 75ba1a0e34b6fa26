"""Pictures with known text, for the OCR tests and benchmark: words in several fonts, sizes and angles,
dark on light and light on dark, over photo-like backgrounds, a UI screenshot and a receipt."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image, ImageFont

FONT_DIRS = ("/usr/share/fonts/truetype", "/usr/share/fonts", "/Library/Fonts", "C:/Windows/Fonts")
WORDS = (
    "harbour garden window coffee receipt ticket station museum bakery library market planet summer "
    "winter orange purple silver castle bridge forest island meadow parking street avenue pharmacy "
    "theatre concert airport railway hotel kitchen balcony mountain festival welcome password network "
    "invoice total cashier dinner breakfast salad pasta chicken cheese bread butter lemon tomato"
).split()


@dataclass(frozen=True)
class TextPicture:
    """A rendered picture and the words written on it."""

    name: str
    image: Image.Image
    words: tuple[str, ...]


def fonts() -> list[Path]:
    """TrueType fonts on this machine (sorted), or [] (then Pillow's built-in font is used)."""
    found: set[Path] = set()
    for folder in FONT_DIRS:
        base = Path(folder)
        if base.is_dir():
            found.update(p for p in base.rglob("*.ttf") if "Math" not in p.name)
    return sorted(found)


def font(path: Path | None, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    from PIL import ImageFont

    return ImageFont.truetype(str(path), size) if path is not None else ImageFont.load_default(size)


def background(size: tuple[int, int], rng: random.Random, dark: bool) -> Image.Image:
    """A photo-like background: a gradient, soft blobs of colour and sensor noise."""
    import numpy as np
    from PIL import Image, ImageFilter

    width, height = size
    base = np.array([rng.randint(20, 80) if dark else rng.randint(170, 235) for _ in range(3)], dtype=np.float32)
    other = base + np.array([rng.randint(-50, 50) for _ in range(3)], dtype=np.float32)
    ramp = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :, None]
    pixels = base * (1 - ramp) + other * ramp + np.zeros((height, 1, 1), dtype=np.float32)
    blobs = Image.new("RGB", (width // 8, height // 8))
    blob_px = np.array(blobs, dtype=np.float32)
    for _ in range(6):
        cx, cy, r = rng.randrange(width // 8), rng.randrange(height // 8), rng.randint(4, 20)
        yy, xx = np.ogrid[: height // 8, : width // 8]
        mask = ((xx - cx) ** 2 + (yy - cy) ** 2) < r * r
        blob_px[mask] += rng.randint(-40, 40)
    blob = Image.fromarray(blob_px.clip(0, 255).astype(np.uint8)).resize(size).filter(ImageFilter.GaussianBlur(6))
    pixels = pixels + (np.asarray(blob, dtype=np.float32) - 0.0) * 0.3 - 20
    noise = np.random.default_rng(rng.randrange(1 << 30)).normal(0, 6, pixels.shape)
    return Image.fromarray((pixels + noise).clip(0, 255).astype(np.uint8))


def scene(
    words: tuple[str, ...],
    *,
    font_path: Path | None,
    size: int,
    angle: float,
    dark: bool,
    seed: int,
    canvas: tuple[int, int] = (1024, 768),
) -> Image.Image:
    """``words`` as one or two lines on a photo-like background, rotated by ``angle`` degrees."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    picture = background(canvas, rng, dark)
    face = font(font_path, size)
    layer = Image.new("L", canvas, 0)
    draw = ImageDraw.Draw(layer)
    half = (len(words) + 1) // 2
    text = " ".join(words[:half]) + "\n" + " ".join(words[half:]) if len(words) > 2 else " ".join(words)
    box = draw.multiline_textbbox((0, 0), text, font=face, spacing=size // 2)
    x = (canvas[0] - (box[2] - box[0])) // 2
    y = (canvas[1] - (box[3] - box[1])) // 2
    draw.multiline_text((x, y), text, fill=255, font=face, spacing=size // 2)
    layer = layer.rotate(angle, resample=Image.Resampling.BICUBIC, center=(canvas[0] / 2, canvas[1] / 2))
    ink = (240, 240, 235) if dark else (rng.randint(0, 40), rng.randint(0, 40), rng.randint(0, 60))
    picture.paste(Image.new("RGB", canvas, ink), (0, 0), layer)
    return picture


def screenshot(seed: int) -> TextPicture:
    """A settings window: a title bar, a menu, labelled buttons and fields (UI text at 14-18 px)."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    picked = rng.sample(WORDS, 8)
    faces = fonts()
    ui = faces[0] if faces else None
    image = Image.new("RGB", (1280, 800), (236, 236, 240))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, 1280, 44), fill=(50, 60, 80))
    draw.text((20, 10), f"{picked[0].capitalize()} settings", fill=(255, 255, 255), font=font(ui, 20))
    for i, word in enumerate(picked[1:4]):
        draw.text((30, 80 + 44 * i), word.capitalize(), fill=(30, 30, 30), font=font(ui, 17))
    for i, word in enumerate(picked[4:7]):
        left = 360 + 200 * i
        draw.rounded_rectangle((left, 600, left + 170, 644), radius=8, fill=(40, 110, 220))
        draw.text((left + 24, 611), word.upper(), fill=(255, 255, 255), font=font(ui, 18))
    draw.rectangle((360, 120, 1000, 160), outline=(150, 150, 160), fill=(255, 255, 255))
    draw.text((372, 129), f"{picked[7]}.example.org", fill=(60, 60, 60), font=font(ui, 18))
    return TextPicture(f"screenshot-{seed}", image, tuple(picked))


def receipt(seed: int) -> TextPicture:
    """A shop receipt on a table: monospaced items and prices on slightly grey paper, tilted."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    items = rng.sample(WORDS, 6)
    mono = next((f for f in fonts() if "Mono" in f.name), None)
    paper = Image.new("RGB", (520, 900), (244, 242, 236))
    draw = ImageDraw.Draw(paper)
    draw.text((140, 30), "GROCERY MARKET", fill=(20, 20, 20), font=font(mono, 28))
    for i, item in enumerate(items):
        price = f"{rng.randint(1, 30)}.{rng.randint(0, 99):02d}"
        draw.text((40, 130 + 60 * i), f"{item.upper():<14}{price:>8}", fill=(30, 30, 30), font=font(mono, 26))
    total = f"{rng.randint(40, 90)}.{rng.randint(0, 99):02d}"
    draw.text((40, 540), f"{'TOTAL':<14}{total:>8}", fill=(0, 0, 0), font=font(mono, 28))
    paper = paper.rotate(rng.uniform(-8, 8), expand=True, fillcolor=(90, 70, 50))
    table = background((1200, 1200), rng, dark=True)
    table.paste(paper, ((1200 - paper.width) // 2, (1200 - paper.height) // 2))
    return TextPicture(f"receipt-{seed}", table, ("grocery", "market", *items, "total"))


def suite(limit: int | None = None) -> Iterator[TextPicture]:
    """The rendered test pictures: each font at three sizes, rotated 0 / +15 / -15 degrees, dark on
    light and light on dark, then screenshots and receipts."""
    found = fonts()
    faces: list[Path | None] = [*found[:: max(1, len(found) // 6)][:6], None]  # spread over the families
    rng = random.Random(7)
    count = 0
    for i, face in enumerate(faces):
        for j, (size, angle) in enumerate(((28, 0.0), (44, 15.0), (64, -15.0))):
            dark = (i + j) % 2 == 1
            words = tuple(rng.sample(WORDS, 3))
            name = f"{face.stem if face else 'pillow'}-{size}px-{angle:+.0f}deg-{'dark' if dark else 'light'}"
            seed = 100 * i + j
            yield TextPicture(name, scene(words, font_path=face, size=size, angle=angle, dark=dark, seed=seed), words)
            count += 1
            if limit is not None and count >= limit:
                return
    yield screenshot(1)
    yield receipt(2)
