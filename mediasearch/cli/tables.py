"""Compact rich tables and progress for `finetune` and `eval` (front ends only; the logic lives elsewhere)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mediasearch.cli.output import console

if TYPE_CHECKING:
    from rich.table import Table

    from mediasearch.lab.finetune import Event

METHOD_NAMES = {"prompt": "single prompt", "ensemble": "template ensemble", "linear": "linear head",
                "learned": "learned prompts"}


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value * 100 + 0.0:+.1f} pts"  # + 0.0: no "-0.0"


def _table(title: str, *columns: str) -> Table:
    from rich.table import Table

    table = Table(title=title, title_justify="left", header_style="bold")
    for i, name in enumerate(columns):
        table.add_column(name, justify="left" if i == 0 else "right", overflow="fold")
    return table


# ---------------------------------------------------------------- eval


def zeroshot_tables(report: Mapping[str, Any]) -> None:
    """Methods per domain, the worst classes and confusions, groups, and the domain-shift table."""
    from rich.markup import escape

    out = console()
    for domain in report["domains"]:
        methods = _table(f"{escape(domain['source'])}: {domain['files']} files", "method", "top-1", "top-5")
        for name, acc in domain["methods"].items():
            methods.add_row(METHOD_NAMES.get(name, name), pct(acc["top1"]), pct(acc["top5"]))
        out.print(methods)
        worst = sorted(domain["per_class"].items(), key=lambda kv: kv[1]["top1"])[:5]
        worst = [(label, row) for label, row in worst if row["top1"] < 1]
        if worst:
            classes = _table("weakest classes", "class", "files", "top-1")
            for label, row in worst:
                classes.add_row(escape(label), str(row["n"]), pct(row["top1"]))
            out.print(classes)
        if domain["confusions"]:
            out.print("most confused: " + "; ".join(
                f"{escape(c['true'])} → {escape(c['predicted'])} ×{c['count']}" for c in domain["confusions"][:5]))
        if "groups" in domain:
            _groups_table(domain["groups"])
        if domain["failed"]:
            out.print(f"[yellow]{domain['failed']} files could not be used[/yellow]")
    if "shift" in report:
        _shift_table(report["shift"])


def _groups_table(groups: Mapping[str, Any]) -> None:
    from rich.markup import escape

    out = console()
    if not groups["groups"]:
        out.print("[yellow]none of these files is in the groups file[/yellow]")
        return
    table = _table("per group", "group", "files", "top-1")
    for name, row in groups["groups"].items():
        table.add_row(escape(name), str(row["n"]), pct(row["top1"]))
    out.print(table)
    out.print(f"largest gap: {groups['gap'] * 100:.1f} pts ({escape(groups['best'])} vs {escape(groups['worst'])})")
    if groups["ungrouped"]:
        out.print(f"{groups['ungrouped']} files have no group")


def _shift_table(rows: Sequence[Mapping[str, Any]]) -> None:
    from rich.markup import escape

    methods = list(rows[0]["top1"])
    table = _table("domain shift (top-1; change from the first)", "domain",
                   *[METHOD_NAMES.get(m, m) for m in methods], "change")
    for row in rows:
        table.add_row(escape(row["source"]), *[pct(row["top1"][m]) for m in methods],
                      _signed(-row["drop"].get("ensemble", 0.0)))
    console().print(table)


CALIBRATION_LEGEND = ("exact: the query is the file's label; match: one of its words; partial: shares a word "
                      "but asks for more; unrelated: no word shared; unknown: a word no label uses")


def calibration_tables(report: Mapping[str, Any]) -> None:
    """Pass rates and percentiles per group, then the queries that let through what they should not."""
    from rich.markup import escape

    out = console()
    cut = report["min_score"]
    groups = _table(f"{escape(report['source'])}: {report['files']} files, {report['queries']['count']} queries",
                    "pairs", "count", f"pass ≥ {cut:g}", "should", "p1", "p10", "p50", "p90", "p99")
    for name, row in report["groups"].items():
        shares = row["percentiles"]
        groups.add_row(name, str(row["pairs"]), pct(row["pass_rate"]),
                       "pass" if row["should_pass"] else "fail", *(f"{shares[k]:.3f}" for k in shares))
    out.print(groups)
    out.print(f"[dim]{CALIBRATION_LEGEND}[/dim]")
    unknown = [q for q in report["per_query"] if q["kind"] == "unknown"]
    if unknown:
        table = _table("unknown-word queries", "query", "hits", "words never learned", "margin at best match")
        for q in unknown:
            margin = "-" if q["gate_margin"] is None else f"{q['gate_margin']:+.3f}"
            table.add_row(escape(q["query"]), str(q["hits"]), escape(", ".join(q["unknown_words"]) or "-"), margin)
        out.print(table)
    leaky = [q for q in report["per_query"] if q["false_hits"] or q["true_hits"] < q["relevant"]]
    if leaky:
        table = _table("queries that miss or over-reach", "query", "relevant", "hits", "right", "wrong")
        for q in leaky:
            table.add_row(escape(q["query"]), str(q["relevant"]), str(q["hits"]), str(q["true_hits"]),
                          str(q["false_hits"]))
        out.print(table)


def retrieval_table(report: Mapping[str, Any]) -> None:
    from rich.markup import escape

    title = f"{escape(report['source'])}: {report['images']} images, {report['texts']} captions"
    table = _table(title, "direction", *list(report["image_to_text"]))
    for key, name in (("image_to_text", "image → text"), ("text_to_image", "text → image")):
        table.add_row(name, *[pct(v) for v in report[key].values()])
    console().print(table)


# ---------------------------------------------------------------- finetune


def finetune_table(report: Mapping[str, Any]) -> None:
    """Zero-shot vs the saved model on the held-out test set and on the reference set."""
    from rich.markup import escape

    metric = report["metric"]
    table = _table(f"wrote {escape(report['out'])} (α = {report['alpha']:g})", "held-out set", "files",
                   f"zero-shot {metric}", f"fine-tuned {metric}", "change")
    test = report["test"]
    table.add_row("test", str(test["files"]), pct(test["zero_shot"]), pct(test["fine_tuned"]),
                  _signed(test["change"]))
    if "linear_head" in test:
        table.add_row("test, linear head", str(test["files"]), pct(test["zero_shot"]), pct(test["linear_head"]),
                      _signed(test["linear_head"] - test["zero_shot"]))
    ref = report.get("reference")
    if ref:
        table.add_row(f"reference: {escape(ref['source'])}", str(ref["files"]), pct(ref["zero_shot"]),
                      pct(ref["fine_tuned"]), _signed(ref["change"]))
    console().print(table)


class FinetuneProgress:
    """Renders ``finetune`` events: a bar while decoding and training, a line per epoch, notes."""

    def __init__(self, *, bar: bool, lines: bool) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.lines = lines
        self.out = console(stderr=True)
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeRemainingColumn(), console=self.out, transient=True, disable=not bar)
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> FinetuneProgress:
        self.bar.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.bar.stop()

    def __call__(self, event: Event) -> None:
        if event.stage in ("prepare", "train"):
            if event.stage not in self.tasks:
                label = "decoding images" if event.stage == "prepare" else "training"
                self.tasks[event.stage] = self.bar.add_task(label, total=event.total)
            self.bar.update(self.tasks[event.stage], completed=event.done, total=event.total)
            return
        if not self.lines:
            return
        info = event.info
        if event.stage == "epoch":
            mark = " (best)" if info.get("best") else ""
            self.out.print(f"epoch {info['epoch']}/{event.total}: loss {info['loss']:.3f}, "
                           f"validation {info['val']:.3f}{mark}", markup=False)
        elif event.stage == "sweep":
            ref = f", reference {info['reference_val']:.3f}" if "reference_val" in info else ""
            self.out.print(f"α {info['alpha']:g}: validation {info['val']:.3f}{ref}", markup=False)
        elif event.stage == "note":
            self.out.print(str(info.get("message", "")), markup=False)
