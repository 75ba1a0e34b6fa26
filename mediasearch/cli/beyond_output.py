"""Tables and progress for `generate` and `eval bias` (front ends only; the logic lives elsewhere)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mediasearch.cli.output import console
from mediasearch.cli.tables import pct


def bias_table(report: Mapping[str, Any]) -> None:
    """One row per group: accuracy and top-k share against data share, before (and after) debiasing."""
    from rich.markup import escape
    from rich.table import Table

    runs = [name for name in ("before", "after") if name in report]
    table = Table(title=f"bias: top-{report['top_k']} shares over {len(report['labels'])} queries",
                  title_justify="left", header_style="bold")
    table.add_column("group")
    table.add_column("n", justify="right")
    table.add_column("data share", justify="right")
    for run in runs:
        table.add_column(f"accuracy ({run})", justify="right")
        table.add_column(f"top-k share ({run})", justify="right")
    for group, row in report["before"]["groups"].items():
        cells = [escape(group), str(row["n"]), pct(row["data_share"])]
        for run in runs:
            r = report[run]["groups"][group]
            cells += [pct(r["accuracy"]), pct(r["topk_share"])]
        table.add_row(*cells)
    out = console()
    out.print(table)
    for run in runs:
        r = report[run]
        out.print(f"{run}: accuracy gap {pct(r['accuracy_gap'])}, largest share gap {pct(r['share_gap'])} "
                  f"({escape(r['share_gap_group'])})")


class ScoreProgress:
    """A bar for `generate`: steps done and the current CLIP score."""

    def __init__(self, *, bar: bool) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("generating"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("score {task.fields[score]}"), TimeRemainingColumn(),
                            console=console(stderr=True), transient=True, disable=not bar)
        self.task: Any = None

    def __enter__(self) -> ScoreProgress:
        self.bar.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.bar.stop()

    def __call__(self, done: int, total: int, score: float) -> None:
        if self.task is None:
            self.task = self.bar.add_task("generate", total=total, score="")
        self.bar.update(self.task, completed=done, score=f"{score:.3f}")
