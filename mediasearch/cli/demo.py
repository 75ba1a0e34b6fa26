"""`mediasearch demo`: a sample library of rendered shapes, indexed with the bundled demo model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mediasearch.settings import Settings

VIDEO_SEGMENTS = (("yellow", "triangle"), ("blue", "star"), ("green", "circle"))
QUERIES = ("a red circle", "a photo of a blue star", "a yellow triangle", "something purple")


def build_library(folder: Path, *, images: int = 48, seed: int = 7) -> Path:
    """Render the sample photos and one MP4 (one shape per 8-second segment) into ``folder``."""
    from mediasearch.lab.shapes import make_library, write_shapes_video

    library = folder / "library"
    (library / "photos").mkdir(parents=True, exist_ok=True)
    (library / "videos").mkdir(parents=True, exist_ok=True)
    if not any((library / "photos").iterdir()):
        make_library(library / "photos", images, seed)
    video = library / "videos" / "shapes.mp4"
    if not video.exists():
        write_shapes_video(video, VIDEO_SEGMENTS, seed=seed)
    return library


def next_steps(demo_home: Path) -> str:
    """The demo's last words: more queries on the sample, then the real model for real photos.

    The demo model knows six colours and four shapes, nothing else: real photos indexed with it give
    nonsense, so the way to them is the default model, in the default home (the demo's is left alone).
    """
    return (
        f'\nTry more on the sample: [bold]mediasearch --home {demo_home} query "a green square"[/bold]'
        "\nFor your own photos, use the real model (ViT-B-32; its weights, about 600 MB, download once):"
        "\n  [bold]mediasearch index ~/Pictures[/bold]"
        "\n(the demo model knows only the sample's colours and shapes; the sample's home is left as it is)"
    )


def run_demo(settings: Settings, folder: Path, *, as_json: bool = False) -> dict[str, Any]:
    """Build, index and query the sample library; print what happens."""
    from mediasearch.cli.output import console, hits_table, key_values, print_json
    from mediasearch.library import Library

    out = console()
    root = build_library(folder)
    if not as_json:
        out.print(f"[bold]sample library[/bold] in {root} (48 photos, one 24 s video)")
    with Library.open(settings=settings) as lib:
        report = lib.index([root], frame_interval=2.0).to_json()
        results: dict[str, Any] = {"index": report, "queries": {}}
        if not as_json:
            key_values("indexed", [(k, v) for k, v in report.items() if k != "errors"])
        for text in QUERIES:
            hits = lib.query(text, limit=5)
            results["queries"][text] = [h.to_json() for h in hits]
            if not as_json:
                hits_table(hits, title=f"query: {text}", fold=True)
    if as_json:
        print_json(results)
    else:
        out.print(next_steps(settings.home))
    return results
