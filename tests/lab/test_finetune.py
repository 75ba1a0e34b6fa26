"""`mediasearch finetune`: data checks, splits, WiSE-FT, the never-worse guard, resuming, checkpoints."""

from __future__ import annotations

import copy
import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mediasearch.clip import checkpoint
from mediasearch.errors import DataError, FinetuneRefused
from mediasearch.lab.dataset import Dataset, Example, read_dataset, split
from mediasearch.lab.shapes import CLASSES, render, save_image

torch = pytest.importorskip("torch")

from mediasearch.lab.finetune import (  # noqa: E402
    CLIP_RECIPE,
    DEMO_RECIPE,
    Event,
    FinetuneOptions,
    choose_alpha,
    finetune,
    interpolate,
    parse_alphas,
    refuse_unless_better,
    reproducible,
    resume_path,
    set_trainable,
)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Any:
    """Training here is small batches of a tiny model: one thread is as fast on an idle machine and
    several times faster on a busy one (threads waiting for each other's time slices)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _render_classes(folder: Path, n: int, seed: int, *, outlined: bool) -> Path:
    """``n`` shapes in class folders: outlined on textured backgrounds (the new domain), or filled.

    224 px squares: the demo model sees 96 px anyway, and small files keep the test fast.
    """
    rng = np.random.default_rng(seed)
    for i in range(n):
        colour, shape = CLASSES[i % len(CLASSES)]
        target = folder / f"{colour}_{shape}"
        target.mkdir(parents=True, exist_ok=True)
        image = render(colour, shape, rng=rng, size=(224, 224), outlined=outlined,
                       background="textured" if outlined else None)
        save_image(image, target / f"{i:04d}.png", "png")
    return folder


@pytest.fixture(scope="module")
def outlined(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The outlined sets (train, test; tiny ones for the resume tests) and filled reference sets."""
    root = tmp_path_factory.mktemp("outlined")
    sets = {"train": (96, 1, True), "test": (96, 2, True), "tiny": (72, 3, True), "tiny_test": (24, 4, True),
            "filled": (720, 5, False), "filled_small": (72, 6, False)}
    return {name: _render_classes(root / name, n, seed, outlined=o) for name, (n, seed, o) in sets.items()}


# ---------------------------------------------------------------- data


def test_read_dataset_forms(tmp_path: Path) -> None:
    for name in ("a.png", "b.png", "c.png"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "with_header.csv").write_text("caption,path\nred circle,a.png\n,b.png\nblue star,gone.png\n")
    (tmp_path / "pairs.csv").write_text("a.png,a red circle\nc.png,a blue star\n")
    jsonl = ['{"path": "a.png", "label": "cat"}', "not json", '{"file": "b.png", "class": "dog"}']
    (tmp_path / "rows.jsonl").write_text("\n".join(jsonl) + "\n")
    (tmp_path / "classes" / "big_red_circle").mkdir(parents=True)
    (tmp_path / "classes" / "big_red_circle" / "x.png").write_bytes(b"x")
    (tmp_path / "classes" / "big_red_circle" / "notes.txt").write_text("ignored")

    header = read_dataset(tmp_path / "with_header.csv")
    assert [e.caption for e in header.examples] == ["red circle"]
    assert (header.problems.empty, header.problems.missing, header.problems.rows) == (1, 1, 3)
    assert [e.caption for e in read_dataset(tmp_path / "pairs.csv").examples] == ["a red circle", "a blue star"]
    rows = read_dataset(tmp_path / "rows.jsonl")
    assert rows.labelled and rows.labels == ["cat", "dog"] and rows.problems.malformed == 1
    classes = read_dataset(tmp_path / "classes")
    assert [(e.path.name, e.label) for e in classes.examples] == [("x.png", "big red circle")]
    with pytest.raises(DataError, match="expected a .csv"):
        read_dataset(tmp_path / "a.png")


def test_split_is_deterministic_stratified_and_keeps_an_image_whole(tmp_path: Path) -> None:
    examples = [Example(tmp_path / f"{label}{i}.png", None, label) for label in "abc" for i in range(10)]
    examples.append(Example(tmp_path / "a0.png", "a second caption of a0", "a"))
    one = split(examples, seed=3, val_fraction=0.2, test_fraction=0.2)
    assert one == split(list(reversed(examples)), seed=3, val_fraction=0.2, test_fraction=0.2)
    assert one != split(examples, seed=4, val_fraction=0.2, test_fraction=0.2)
    for part in (one.val, one.test):
        assert sorted(e.label for e in part if e.caption is None) == ["a", "a", "b", "b", "c", "c"]
    parts_of_a0 = [name for name, part in (("train", one.train), ("val", one.val), ("test", one.test))
                   for e in part if e.path.name == "a0.png"]
    assert len(set(parts_of_a0)) == 1 and len(parts_of_a0) == 2


def test_bad_data_fails_fast_with_counts(cli: Any, tmp_path: Path, outlined: dict[str, Path]) -> None:
    good = sorted(outlined["tiny"].rglob("*.*"))[:6]
    (tmp_path / "broken.jpg").write_text("this is not a picture")
    rows = [[str(p), "a photo of a shape"] for p in good]
    rows += [["missing1.jpg", "a cat"], ["missing2.jpg", "a dog"], [str(good[0]), ""], ["broken.jpg", "a bird"]]
    data = tmp_path / "data.csv"
    data.write_text("path,caption\n" + "".join(f"{p},{c}\n" for p, c in rows))
    started = time.monotonic()
    result = cli("finetune", str(data), "--out", str(tmp_path / "ft.safetensors"), ok=False)
    assert result.exit_code == 1 and time.monotonic() - started < 20
    assert "2 missing files, 1 unreadable images, 1 empty captions or labels" in result.stderr
    assert "--skip-bad" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "ft.safetensors").exists() and not resume_path(tmp_path / "ft.safetensors").exists()
    dataset = read_dataset(data)
    assert dataset.problems.count == 3 and len(dataset.examples) == 7
    dataset.without({tmp_path / "broken.jpg": "unreadable"}).check(skip_bad=True)  # what --skip-bad keeps
    with pytest.raises(DataError, match="no usable examples"):
        Dataset("empty", ()).check(skip_bad=True)


# ---------------------------------------------------------------- parts of a run


def test_wise_ft_interpolates_and_alpha_respects_the_reference() -> None:
    zero = {"w": torch.zeros(2), "steps": torch.tensor(1)}
    tuned = {"w": torch.ones(2), "steps": torch.tensor(7)}
    mixed = interpolate(zero, tuned, 0.25)
    assert torch.allclose(mixed["w"], torch.full((2,), 0.25)) and int(mixed["steps"]) == 7
    rows = [{"alpha": 0.0, "val": 0.3, "reference_val": 0.99}, {"alpha": 0.5, "val": 0.8, "reference_val": 0.98},
            {"alpha": 0.9, "val": 0.9, "reference_val": 0.95}, {"alpha": 1.0, "val": 0.9, "reference_val": 0.99}]
    assert choose_alpha(rows, 0.02, 0.99) == 1.0  # best validation; α 0.9 ties it but costs the reference
    assert choose_alpha(rows[:3], 0.02, 0.99) == 0.5
    assert choose_alpha(rows[:3], 0.05, 0.99) == 0.9
    assert choose_alpha(rows[1:3], 0.01, 0.995) == 0.0  # nothing allowed: keep the zero-shot weights
    assert choose_alpha(rows, 0.0) == 0.9  # no reference: validation alone
    assert parse_alphas("0:1:0.25") == (0.0, 0.25, 0.5, 0.75, 1.0) and parse_alphas("0.5, 1") == (0.5, 1.0)


def test_guard_refuses_anything_not_better_than_zero_shot() -> None:
    report = {"metric": "top1", "out": "x.safetensors", "alpha": 0.5,
              "test": {"files": 10, "zero_shot": 0.5, "fine_tuned": 0.6}}
    refuse_unless_better(report)
    with pytest.raises(FinetuneRefused, match="0.400 < zero-shot 0.500"):
        refuse_unless_better({**report, "test": {"files": 10, "zero_shot": 0.5, "fine_tuned": 0.4}})
    with pytest.raises(FinetuneRefused, match="linear head"):
        refuse_unless_better({**report, "test": {**report["test"], "linear_head": 0.45}})
    with pytest.raises(FinetuneRefused, match="α = 0") as refused:
        refuse_unless_better({**report, "alpha": 0.0, "test": {"files": 10, "zero_shot": 0.5, "fine_tuned": 0.5}})
    assert refused.value.report is not None and refused.value.report["alpha"] == 0.0


def test_lock_and_unfreeze_choose_what_trains(demo_model: Any, tmp_path: Path) -> None:
    module = copy.deepcopy(demo_model.model)

    def trainable(**kw: Any) -> set[str]:
        set_trainable(module, FinetuneOptions(out=tmp_path / "x", **kw))
        return {n for n, p in module.named_parameters() if p.requires_grad}

    everything = trainable()
    assert everything == {n for n, _ in module.named_parameters()}
    no_text = trainable(lock_text=True)
    assert no_text == {n for n in everything if n.startswith("visual.")} | {"logit_scale"}
    last = trainable(lock_text=True, unfreeze_last=1)
    assert last and all(n.startswith(("visual.layer4.", "visual.attnpool.")) or n == "logit_scale" for n in last)
    assert any(n.startswith("visual.attnpool.") for n in last)
    text_last = trainable(lock_image=True, unfreeze_last=1)
    blocks = len(module.transformer.resblocks)
    assert f"transformer.resblocks.{blocks - 1}.mlp.c_fc.weight" in text_last and "ln_final.weight" in text_last
    assert "token_embedding.weight" not in text_last and "transformer.resblocks.0.mlp.c_fc.weight" not in text_last


# ---------------------------------------------------------------- whole runs


def test_finetune_learns_outlines_without_forgetting_filled(
    demo_model: Any, cli: Any, tmp_path: Path, outlined: dict[str, Path]
) -> None:
    """The headline check, smaller, with the demo model's recipe (no training option given): 96 outlined
    images (77 to train on), 96 held out; 720 filled shapes as the reference (240 to choose α, 240 to
    report, 240 to replay). Measured: outlined 0.95-0.97, filled within half a point."""
    out = tmp_path / "outlined.safetensors"
    options = FinetuneOptions(out=out, test=outlined["test"], reference=outlined["filled"], head="linear")
    report = finetune(demo_model, outlined["train"], options)
    test, reference = report["test"], report["reference"]
    assert report["data"]["kind"] == "labelled" and report["data"]["test"] == 96 and reference["files"] == 240
    assert report["training"]["steps"] > 0 and report["training"]["trainable_params"] > 0
    assert test["zero_shot"] <= 0.5  # the demo model never saw an outline
    assert test["fine_tuned"] >= 0.85
    assert reference["fine_tuned"] >= reference["zero_shot"] - 0.03
    assert test["linear_head"] >= test["zero_shot"]
    assert out.is_file() and not resume_path(out).exists()

    meta = checkpoint.read_metadata(out)
    assert meta is not None and meta["base"]["name"] == "demo" and meta["alpha"] == report["alpha"]
    assert meta["data"]["digest"] == report["data"]["digest"]
    assert meta["head"]["labels"] == report["data"]["classes"]
    # The checkpoint works as --pretrained for every command, and keys a collection of its own.
    evaluated = cli.json("--pretrained", str(out), "eval", "zeroshot", str(outlined["test"]))["domains"][0]
    assert evaluated["methods"]["ensemble"]["top1"] == pytest.approx(test["fine_tuned"])
    assert evaluated["methods"]["linear"]["top1"] == pytest.approx(test["linear_head"])
    one = str(next(outlined["test"].rglob("*.*")))
    by_head = cli.json("--pretrained", str(out), "classify", one)[0]["labels"]
    assert len(by_head) == 24 and sum(lab["prob"] for lab in by_head) == pytest.approx(1.0, abs=1e-3)
    cli.json("index", str(outlined["filled_small"]))
    indexed = cli.json("--pretrained", str(out), "index", str(outlined["filled_small"]))
    assert indexed["added"] == 72  # a new collection: nothing carried over from the plain demo model's
    assert cli.json("--pretrained", str(out), "status")["model"]["pretrained"] == str(out)
    hits = cli.json("--pretrained", str(out), "query", "a photo of a red circle", "--limit", "1")
    assert "red_circle" in hits[0]["path"]


def test_each_model_family_has_its_recipe_and_options_override_it(tmp_path: Path) -> None:
    options = FinetuneOptions(out=tmp_path / "x.safetensors")
    assert options.recipe(is_demo=True) == DEMO_RECIPE and DEMO_RECIPE.replay > 0 and DEMO_RECIPE.threads == 1
    assert options.recipe(is_demo=False) == CLIP_RECIPE and CLIP_RECIPE.lr == 1e-5 and not CLIP_RECIPE.lock_text
    no_reference = FinetuneOptions(out=tmp_path / "x.safetensors", reference_size=0).recipe(is_demo=True)
    assert no_reference.replay == 0 and no_reference.epochs == DEMO_RECIPE.epochs  # nothing to replay
    mine = FinetuneOptions(out=tmp_path / "x.safetensors", epochs=3, lock_text=False, lr=0.1, threads=2)
    assert mine.recipe(is_demo=True) == dataclasses.replace(DEMO_RECIPE, epochs=3, lock_text=False, lr=0.1, threads=2)
    resolved = mine.resolved(is_demo=True)
    assert (resolved.epochs, resolved.patience, resolved.replay) == (3, DEMO_RECIPE.patience, DEMO_RECIPE.replay)


def test_a_run_fixes_threads_seed_and_deterministic_algorithms_and_restores_them() -> None:
    threads = torch.get_num_threads()
    before = torch.are_deterministic_algorithms_enabled()
    with reproducible(threads + 1, 5, deterministic=True):
        assert torch.get_num_threads() == threads + 1 and torch.are_deterministic_algorithms_enabled()
        first = torch.rand(3)
    with reproducible(None, 5, deterministic=False):
        assert torch.get_num_threads() == threads and torch.are_deterministic_algorithms_enabled() == before
        assert torch.equal(torch.rand(3), first)  # seeded
    assert torch.get_num_threads() == threads and torch.are_deterministic_algorithms_enabled() == before


def _tiny_options(out: Path, outlined: dict[str, Path], **kw: Any) -> FinetuneOptions:
    return FinetuneOptions(out=out, test=outlined["tiny_test"], epochs=4, batch_size=16, lock_text=True,
                           patience=10, reference_size=0, alphas=(0.0, 0.5, 1.0), **kw)


def _run(model: Any, data: Path, options: FinetuneOptions, progress: Any = None) -> dict[str, Any]:
    """A run's report, whether or not the guard let it write its checkpoint."""
    try:
        return finetune(model, data, options, *([progress] if progress else []))
    except FinetuneRefused as refused:
        assert refused.report is not None
        return refused.report


def test_an_interrupted_run_resumes_to_the_same_result(
    demo_model: Any, tmp_path: Path, outlined: dict[str, Path]
) -> None:
    straight = _run(demo_model, outlined["tiny"], _tiny_options(tmp_path / "a.safetensors", outlined))
    options = _tiny_options(tmp_path / "b.safetensors", outlined, save_every=0.0)

    def stop_in_epoch_three(event: Event) -> None:
        if event.stage == "train" and event.done == 7:  # 48 training images in batches of 16: 3 steps an epoch
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune(demo_model, outlined["tiny"], options, stop_in_epoch_three)
    assert resume_path(options.out).is_file() and not options.out.exists()
    resumed = _run(demo_model, outlined["tiny"], options)
    assert resumed["training"]["resumed_from"] == {"epoch": 2, "step": 7}
    assert not resume_path(options.out).exists()
    for key in ("losses", "best_epoch"):
        assert resumed["training"][key] == pytest.approx(straight["training"][key])
    history, expected = resumed["training"]["history"], straight["training"]["history"]
    assert len(history) == len(expected)
    for got, want in zip(history, expected, strict=True):
        assert got == pytest.approx(want)
    assert resumed["alpha"] == straight["alpha"] and resumed["test"] == pytest.approx(straight["test"])
    # Other options make the saved state useless: it is set aside, not trusted.
    torch.save({"fingerprint": "another run"}, resume_path(options.out))
    assert _run(demo_model, outlined["tiny"], options)["training"]["resumed_from"] is None


def test_a_killed_process_resumes_from_its_checkpoint(cli: Any, tmp_path: Path, outlined: dict[str, Path]) -> None:
    out = tmp_path / "killed.safetensors"
    args = ["finetune", str(outlined["tiny"]), "--out", str(out), "--test", str(outlined["tiny_test"]),
            "--reference", str(outlined["filled_small"]), "--epochs", "12", "--batch-size", "16", "--lock-text",
            "--patience", "12"]
    command = [sys.executable, "-m", "mediasearch", "--home", str(tmp_path / "home"), "--model", "demo",
               "--device", "cpu", *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not resume_path(out).exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    _, stderr = process.communicate(timeout=30)
    assert resume_path(out).exists(), stderr.decode()
    result = cli(*args, ok=False)
    assert "resuming from epoch" in result.stderr, result.stderr
    assert not resume_path(out).exists()
    if result.exit_code == 0:
        assert out.exists()
    else:  # the guard may find no gain on 24 test files: then a one-line refusal, nothing written
        assert result.exit_code == 1 and "refused:" in result.stderr and not out.exists(), result.stderr


def test_epochs_zero_with_a_linear_head_is_a_linear_probe(
    demo_model: Any, tmp_path: Path, outlined: dict[str, Path]
) -> None:
    options = _tiny_options(tmp_path / "probe.safetensors", outlined, head="linear")
    report = _run(demo_model, outlined["tiny"], FinetuneOptions(**{**vars(options), "epochs": 0}))
    assert report["alpha"] == 0.0 and report["sweep"] == []
    assert report["test"]["fine_tuned"] == report["test"]["zero_shot"]
    assert "linear_head" in report["test"]
    # A probe on the frozen embeddings beats chance (1 in 24 classes) by far: 0.5 top-1 here.
    assert 4 / 24 < report["test"]["linear_head"] <= 1.0


def test_captioned_data_is_scored_by_retrieval(demo_model: Any, tmp_path: Path, outlined: dict[str, Path]) -> None:
    rows = [f"{p},a photo of a {p.parent.name.replace('_', ' ')}\n" for p in sorted(outlined["tiny"].rglob("*.png"))]
    data = tmp_path / "captions.csv"
    data.write_text("path,caption\n" + "".join(rows))
    options = FinetuneOptions(out=tmp_path / "c.safetensors", epochs=2, batch_size=16, reference_size=0,
                              alphas=(0.0, 1.0), test_fraction=0.25)
    report = _run(demo_model, data, options)
    assert report["metric"] == "recall@1" and report["data"]["kind"] == "captioned"
    sizes = report["data"]
    assert sizes["test"] >= 12 and sizes["train"] + sizes["val"] + sizes["test"] == 72
    assert 0.0 <= report["test"]["zero_shot"] <= 1.0 and len(report["training"]["history"]) <= 2
