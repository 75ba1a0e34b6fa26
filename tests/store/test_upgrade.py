"""A store written by the release before schema versions opens with today's code: it is upgraded, and its
queries give the answers they gave then (the asset and its answers: ``scripts/make_store_asset.py``)."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

ASSETS = Path(__file__).parent / "assets"
CHUNK = 1 << 16


def unpack(asset: Path, dest: Path) -> Path:
    """Unpack a home, leaving holes for the zero pages (the engine pre-sizes its files: 260 MB of zeros)."""
    with tarfile.open(asset) as tar:
        for member in tar.getmembers():
            target = dest / member.name
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None
            with open(target, "wb") as out:
                while chunk := source.read(CHUNK):
                    if chunk.count(0) == len(chunk):
                        out.seek(len(chunk), 1)
                    else:
                        out.write(chunk)
                out.truncate()
    return dest / "home"


def stored(home: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from mediasearch.store.collections import active_collection, open_store

    collection = active_collection(home=home)
    assert collection is not None
    with open_store(home=home, collection=collection, dim=None, create=False) as store:
        return store.get_meta() or {}, [r.payload for r in store.scroll()]


def test_a_schema_1_store_is_upgraded_and_answers_as_before(tmp_path: Path, demo_model: Any) -> None:
    import mediasearch as ms
    from mediasearch.index.versions import SCHEMA_VERSION

    home = unpack(ASSETS / "store_v1.tar.gz", tmp_path)
    expected = json.loads((home / "expected.json").read_text())
    meta, payloads = stored(home)
    assert "schema" not in meta and all("enrichers" not in p for p in payloads)  # as that release wrote it

    with ms.Library.open(home=home) as lib:
        for text, hits in expected["queries"].items():
            # literal: that release read the text as it was ("a photo of" is parsed as kind=image now)
            got = [h.to_json() for h in lib.query(text, limit=6, literal=True)]
            assert [h["path"] for h in got] == [h["path"] for h in hits], text
            assert [h["timestamp"] for h in got] == [h["timestamp"] for h in hits], text
            # the text tower ran through onnxruntime then (the CLI's cached one), through torch here
            assert [h["score"] for h in got] == pytest.approx([h["score"] for h in hits], abs=1e-2), text
        assert lib.status().files == expected["index"]["added"]

    meta, payloads = stored(home)
    assert meta["schema"] == SCHEMA_VERSION
    assert meta["model"]["name"] == "demo"  # the rest of the meta is kept
    # Every point's vector is recorded as clip's; its metadata waits for the metadata enricher.
    assert len(payloads) == expected["index"]["added"] - 1 + expected["index"]["frames"]
    assert all(p["enrichers"] == {"clip": 1} for p in payloads)


def test_an_upgrade_is_idempotent_and_a_newer_schema_is_refused(tmp_path: Path) -> None:
    from mediasearch.errors import StoreError
    from mediasearch.index.schema import ensure_schema
    from mediasearch.store.collections import active_collection, open_store

    home = unpack(ASSETS / "store_v1.tar.gz", tmp_path)
    collection = active_collection(home=home)
    assert collection is not None
    with open_store(home=home, collection=collection, dim=None, create=False) as store:
        assert len(ensure_schema(store)) == 1
        assert ensure_schema(store) == []  # current now: nothing to do
        store.set_meta({**(store.get_meta() or {}), "schema": 99})
        with pytest.raises(StoreError, match="newer mediasearch"):
            ensure_schema(store)
