"""JPEG decoding on the GPU (nvJPEG through ``torchvision.io.decode_jpeg``) for indexing with CUDA.

At thousands of images a second the CPU cannot keep up with Huffman-decoding JPEGs, even at the reduced
sizes that ``decode.load_image`` asks libjpeg for. With a CUDA model the decode workers only read the
file and its header (size, EXIF orientation, date, camera: ``read_jpeg``); the encoder decodes each batch
on the GPU, orients, resizes and crops it there the way the model's own transform does on the CPU
(``prepare_batch``), and feeds it to the model without a round trip through host memory. A JPEG that
nvJPEG refuses (CMYK, arithmetic coding, damage) is decoded on the CPU as usual; one that the CPU
cannot decode either is reported, like any unreadable file.

Everything here also runs with ``device="cpu"`` (decode_jpeg has a libjpeg path), which is how the
tests check it; the CUDA branch itself is only exercised on a machine with a GPU.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mediasearch.errors import MediaSearchError

if TYPE_CHECKING:
    import torch

    from mediasearch.media.decode import MediaMeta

JPEG_MAGIC = b"\xff\xd8\xff"
JPEG_END = b"\xff\xd9"
DECODE_CHUNK = 32  # images decoded at full size at once: bounds GPU memory (12 MP RGB is 36 MB each)


@dataclass(frozen=True)
class JpegBytes:
    """A JPEG file's bytes, to be decoded with its batch on the GPU, and its EXIF orientation."""

    path: str
    data: bytes
    orientation: int = 1


@dataclass(frozen=True)
class Geometry:
    """What the model's transform does before normalising: resize (short side or squash), crop."""

    resize: int | tuple[int, int]
    crop: tuple[int, int] | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def geometry_of(transform: Any) -> Geometry | None:
    """The steps of an open_clip eval transform; None for anything else (then the CPU decodes)."""
    resize: int | tuple[int, int] | None = None
    crop: tuple[int, int] | None = None
    norm: tuple[Any, Any] | None = None
    for step in getattr(transform, "transforms", []):
        kind = type(step).__name__
        if kind == "Resize" and str(getattr(step, "interpolation", "")).endswith("BICUBIC"):
            size = step.size
            resize = int(size) if isinstance(size, int) else (int(size[0]), int(size[-1]))
        elif kind == "CenterCrop":
            crop = (int(step.size[0]), int(step.size[-1]))
        elif kind == "Normalize":
            norm = (step.mean, step.std)
        elif kind not in ("MaybeConvertMode", "MaybeToTensor", "ToTensor", "function"):
            return None
    if resize is None or norm is None:
        return None
    mean, std = (tuple(float(v) for v in values) for values in norm)
    return Geometry(resize, crop, (mean[0], mean[1], mean[2]), (std[0], std[1], std[2]))


def read_jpeg(path: str) -> tuple[JpegBytes, MediaMeta] | None:
    """A JPEG's bytes and metadata, without decoding its pixels; None for anything that is not a JPEG."""
    from PIL import Image

    from mediasearch.media.metadata import image_meta as _image_meta

    with open(path, "rb") as fh:
        data = fh.read()
    if not data.startswith(JPEG_MAGIC):
        return None
    try:
        with Image.open(io.BytesIO(data), formats=("JPEG",)) as im:
            if im.mode not in ("RGB", "L") or getattr(im, "is_animated", False) or not data.endswith(JPEG_END):
                return None  # CMYK, multi-picture, truncated: the CPU path knows how (or what to say)
            exif = im.getexif()
            meta = _image_meta(im.size, exif)
            orientation = int(exif.get(0x0112, 1) or 1)
    except Exception:  # the CPU path will say exactly what is wrong
        return None
    return JpegBytes(path, data, orientation), meta


def prepare_batch(
    items: Sequence[Any], geometry: Geometry, device: str, fallback: Any
) -> tuple[torch.Tensor, dict[int, str]]:
    """The model input for a batch that mixes ``JpegBytes`` and CPU-preprocessed tensors, on ``device``.

    ``fallback(path)`` preprocesses a JPEG on the CPU when the GPU cannot decode it. Returns the
    batch (failed items left out) and ``{index: reason}`` for the items no decoder could read.
    """
    import torch

    rows: dict[int, torch.Tensor] = {}
    failed: dict[int, str] = {}
    jpegs = [i for i, item in enumerate(items) if isinstance(item, JpegBytes)]
    for start in range(0, len(jpegs), DECODE_CHUNK):
        chunk = jpegs[start : start + DECODE_CHUNK]
        rows.update(_decode_chunk([items[i] for i in chunk], chunk, geometry, device))
    for i, item in enumerate(items):
        if i in rows:
            continue
        try:
            tensor = fallback(item.path) if isinstance(item, JpegBytes) else item
        except MediaSearchError as exc:
            failed[i] = str(exc)
            continue
        except OSError as exc:
            failed[i] = f"cannot read file: {exc.strerror or exc}"
            continue
        rows[i] = tensor.to(device, non_blocking=True)
    kept = [rows[i] for i in range(len(items)) if i not in failed]
    return torch.stack(kept) if kept else torch.empty(0), failed


def _decode_chunk(
    items: Sequence[JpegBytes], indices: Sequence[int], geometry: Geometry, device: str
) -> dict[int, torch.Tensor]:
    """Decode a chunk in one call; when that fails, one by one (the failures go to the CPU)."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    def decode(batch: Sequence[JpegBytes]) -> list[torch.Tensor]:
        raw = [torch.frombuffer(bytearray(item.data), dtype=torch.uint8) for item in batch]
        out = decode_jpeg(raw, mode=ImageReadMode.RGB, device=device)
        return list(out) if isinstance(out, (list, tuple)) else [out]

    try:
        pictures = decode(items)
        decoded = dict(zip(indices, pictures, strict=True))
    except RuntimeError:
        decoded = {}
        for index, item in zip(indices, items, strict=True):
            try:
                decoded[index] = decode([item])[0]
            except RuntimeError:
                continue
    by_index = dict(zip(indices, items, strict=True))
    return {i: transform(orient(p, by_index[i].orientation), geometry) for i, p in decoded.items()}


def orient(picture: torch.Tensor, orientation: int) -> torch.Tensor:
    """Apply an EXIF orientation (1-8) to a C×H×W picture, as ``PIL.ImageOps.exif_transpose`` does."""
    import torch

    if orientation == 2:
        return picture.flip(-1)
    if orientation == 3:
        return picture.flip(-2, -1)
    if orientation == 4:
        return picture.flip(-2)
    if orientation == 5:
        return picture.transpose(-2, -1)
    if orientation == 6:
        return torch.rot90(picture, -1, dims=(-2, -1))
    if orientation == 7:
        return picture.transpose(-2, -1).flip(-2, -1)
    if orientation == 8:
        return torch.rot90(picture, 1, dims=(-2, -1))
    return picture


def transform(picture: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """uint8 C×H×W → the model's normalised input: bicubic antialiased resize, centre crop, normalise."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    height, width = (int(v) for v in picture.shape[-2:])
    if isinstance(geometry.resize, int):  # the short side, the long one truncated (as torchvision does)
        short = geometry.resize
        size = (short, int(short * width / height)) if height <= width else (int(short * height / width), short)
    else:
        size = geometry.resize
    x = picture.unsqueeze(0).float()
    x = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False)[0]
    if geometry.crop is not None:
        top = max(0, int(round((x.shape[-2] - geometry.crop[0]) / 2)))
        left = max(0, int(round((x.shape[-1] - geometry.crop[1]) / 2)))
        x = x[:, top : top + geometry.crop[0], left : left + geometry.crop[1]]
    mean = torch.tensor(geometry.mean, device=x.device).view(3, 1, 1)
    std = torch.tensor(geometry.std, device=x.device).view(3, 1, 1)
    return (x.clamp(0, 255) / 255 - mean) / std
