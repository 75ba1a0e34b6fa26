#!/usr/bin/env python
"""Fine-tuning's headline check: teach the demo model *outlined* shapes, with the command's defaults.

    python scripts/finetune_outlined.py [--seed N] [--train 216] [--test 240] [--workdir DIR]

Renders N-seeded sets — ``--train`` labelled outlined shapes on textured backgrounds (the new domain),
``--test`` more as the held-out test set and as many filled shapes (the demo model's own domain) —
then runs, as a user would, with no other flag:

    mediasearch --model demo finetune outlined_train --out outlined.safetensors

and measures the demo model and the checkpoint with ``mediasearch --model demo [--pretrained CKPT]
eval zeroshot`` on both held-out sets. Goals: outlined ≥ 0.90, filled drop ≤ 3 points. The recipe is
the demo model's default (``mediasearch.lab.finetune.DEMO_RECIPE``): one CPU thread, seeded,
deterministic algorithms, so a data seed gives the same figures on any x86-64 machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mediasearch.lab.shapes import make_library


def mediasearch(home: Path, *args: str) -> dict[str, Any]:
    """Run the command (JSON out), echoing it; a refused fine-tune's exit 1 is an answer too."""
    command = [sys.executable, "-m", "mediasearch", "--model", "demo", *args, "--json"]
    print("$ mediasearch --model demo " + " ".join(args), file=sys.stderr, flush=True)
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "MEDIASEARCH_HOME": str(home)})
    if done.returncode == 1 and args[0] == "finetune":
        return {"refused": done.stderr.strip()}
    if done.returncode != 0:
        sys.exit(f"mediasearch {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def top1(home: Path, folder: Path, checkpoint: Path | None = None) -> float:
    pretrained = ["--pretrained", str(checkpoint)] if checkpoint else []
    report = mediasearch(home, *pretrained, "eval", "zeroshot", str(folder))
    return float(report["domains"][0]["methods"]["ensemble"]["top1"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0, help="seed of the rendered sets")
    parser.add_argument("--train", type=int, default=216)
    parser.add_argument("--test", type=int, default=240)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.workdir or Path(tmp)
        sets = {"outlined_train": (args.train, 0, True), "outlined_test": (args.test, 1, True),
                "filled_test": (args.test, 2, False)}
        for name, (n, offset, outlined) in sets.items():
            make_library(root / name, n, args.seed * 10 + offset, outlined=outlined,
                         background="textured" if outlined else None, class_folders=True)
        home, ckpt = root / "home", root / "outlined.safetensors"
        started = time.monotonic()
        report = mediasearch(home, "finetune", str(root / "outlined_train"), "--out", str(ckpt))
        seconds = time.monotonic() - started
        if "refused" in report:
            print(f"fine-tune refused: {report['refused']}")
            return 1
        figures = {name: (top1(home, root / name), top1(home, root / name, ckpt))
                   for name in ("outlined_test", "filled_test")}
    return summary(args, report, figures, seconds)


def summary(args: argparse.Namespace, report: dict[str, Any], figures: dict[str, tuple[float, float]],
            seconds: float) -> int:
    (o_zero, o_tuned), (f_zero, f_tuned) = figures["outlined_test"], figures["filled_test"]
    drop = (f_zero - f_tuned) * 100
    print(f"\ndemo model, data seed {args.seed}: fine-tuned on {args.train} outlined shapes "
          f"({report['data']['train']} train, {report['data']['val']} validation, {report['data']['test']} test), "
          f"alpha {report['alpha']:g}, {seconds:.0f} s")
    print(f"{'held-out set':<26} {'zero-shot':>9} {'fine-tuned':>10}")
    print(f"{f'{args.test} outlined shapes':<26} {o_zero:>9.3f} {o_tuned:>10.3f}")
    print(f"{f'{args.test} filled shapes':<26} {f_zero:>9.3f} {f_tuned:>10.3f}  ({-drop + 0.0:+.1f} pts)")
    passed = o_tuned >= 0.9 and drop <= 3.0
    print(f"goal (outlined >= 0.90, filled drop <= 3 pts): {'met' if passed else 'NOT met'}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
