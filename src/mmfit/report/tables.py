"""Rich tables for evaluation results (metrics per task, per class, modality ablation, slices)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from mmfit.evaluation.metrics import not_in_split
from mmfit.tasks import kind_of_metrics


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def print_evaluation(result: dict, console: Console | None = None, title: str = "") -> None:
    console = console or Console()
    metrics = result["metrics"]
    by_kind: dict[str, list[str]] = {}
    for task, m in metrics.items():
        by_kind.setdefault(kind_of_metrics(m).name, []).append(task)
    for kind, tasks in by_kind.items():  # one table per task kind keeps them narrow
        t = Table(title=f"{title or result.get('split', '')} ({kind})".strip())
        t.add_column("task")
        t.add_column("n", justify="right")
        cols = [c for c in kind_of_metrics(metrics[tasks[0]]).metrics if any(c in metrics[x] for x in tasks)]
        for c in cols:
            t.add_column(c, justify="right")
        for task in tasks:
            t.add_row(task, str(metrics[task].get("n", "")), *[_fmt(metrics[task].get(c)) for c in cols])
        console.print(t)
    for task, m in metrics.items():
        if "per_class" in m and "precision" in next(iter(m["per_class"].values()), {}):
            pc = Table(title=f"{task}: per class")
            for c in ("class", "precision", "recall", "f1", "support"):
                pc.add_column(c, justify="left" if c == "class" else "right")
            absent = not_in_split(m)
            for cls, v in m["per_class"].items():
                if cls in absent:  # neither held nor predicted: no F1, and not in macro-F1
                    pc.add_row(cls, "-", "-", "-", "0 (not in this split)")
                    continue
                pc.add_row(cls, _fmt(v["precision"]), _fmt(v["recall"]), _fmt(v["f1"]), str(v["support"]))
            console.print(pc)
    if result.get("ensemble"):
        print_ensemble(result["ensemble"], console)
    if "ablation" in result:
        print_ablation(result, console)
    if "slices" in result:
        print_slices(result["slices"], console)


def slice_columns(slices: dict) -> list[tuple[str, str]]:
    """(task, headline metric) pairs a slice table shows: each task's default metric."""
    tasks: dict[str, str] = {}
    for sl in slices["slices"]:
        for t, m in sl["metrics"].items():
            tasks.setdefault(t, kind_of_metrics(m).metric)
    return list(tasks.items())


def print_slices(slices: dict, console: Console | None = None) -> None:
    console = console or Console()
    cols = slice_columns(slices)
    t = Table(title=f"by {slices['column']} ({slices['how']})")
    t.add_column(slices["column"])
    t.add_column("rows", justify="right")
    for task, metric in cols:
        t.add_column(f"{task} {metric}", justify="right")
    for sl in slices["slices"]:
        t.add_row(str(sl["value"]), str(sl["rows"]), *[_fmt(sl["metrics"].get(task, {}).get(metric))
                                                       for task, metric in cols])
    console.print(t)


def print_ensemble(weights: dict, console: Console | None = None) -> None:
    """The ensemble's weight per member and head (a head 'aux:<m>' predicts from modality m alone)."""
    console = console or Console()
    t = Table(title="ensemble: weights chosen on validation")
    for c in ("task", "member", "head", "weight", "temperature", "trained on"):
        t.add_column(c, justify="right" if c in ("weight", "temperature") else "left")
    for task, ws in weights.items():
        for w in ws:
            t.add_row(task, w["member"], w["head"], f"{w['weight']:.2f}", f"{w.get('temperature', 1.0):.2f}",
                      w.get("trained_on", "train"))
    console.print(t)


def print_roles(choices, console: Console | None = None) -> None:
    """The inferred role of every column, with the reason."""
    console = console or Console()
    t = Table(title="columns (roles inferred from content; override with --column NAME=ROLE)")
    for c in ("column", "role", "why"):
        t.add_column(c)
    for c in choices:
        t.add_row(c.column, c.role, c.reason)
    console.print(t)


def print_ablation(result: dict, console: Console | None = None) -> None:
    """One row per condition: all modalities, each one masked out, each one alone."""
    console = console or Console()
    metrics = result["metrics"]
    t = Table(title="modality ablation (masked modalities treated as absent)")
    t.add_column("inputs")
    keys = []
    for task, m in metrics.items():
        k = kind_of_metrics(m).metric
        keys.append((task, k))
        t.add_column(f"{task} {k}", justify="right")
    t.add_row("all modalities", *[_fmt(metrics[task][k]) for task, k in keys])
    for cond, ms in result["ablation"].items():
        label = cond.replace("without_", "without ").replace("only_", "only ")
        t.add_row(label, *[_fmt(ms.get(task, {}).get(k)) for task, k in keys])
    console.print(t)


def print_frame(df, console: Console | None = None, title: str = "") -> None:
    """A DataFrame as a table (numbers to 4 places; empty cells blank)."""
    table = Table(title=title or None)
    for c in df.columns:
        table.add_column(str(c), justify="right" if df[c].dtype.kind in "fi" else "left")
    for row in df.itertuples(index=False):
        table.add_row(*("" if v is None or (isinstance(v, float) and v != v) else _fmt(v) for v in row))
    (console or Console()).print(table)
