"""Metrics per slice of the rows: every value (or bin) of one manifest column, so a user sees whom
the model fails (a speaker, an age band, a site). The rows are predicted once; each slice's metrics
are computed from its share of those predictions, and the slices partition the rows (missing values
form a slice of their own), so their row counts add up to the whole."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mmfit.evaluation.predict import metrics_from_predictions

MISSING = "(missing)"


def slice_labels(values: pd.Series, bins: int = 4) -> tuple[np.ndarray, str]:
    """Each row's slice -> (labels, how): the value itself for text or categories and for numbers
    with at most `bins` distinct values; quantile bins ("[18, 41)" ... "[63, 90]") for other numbers."""
    present = values.notna() & (values.astype(str).str.strip() != "")
    numbers = pd.to_numeric(values.where(present), errors="coerce")
    numeric = bool(present.any()) and bool(numbers[present].notna().all())
    labels = np.array([MISSING] * len(values), dtype=object)
    if numeric and numbers[present].nunique() > bins:
        cut, edges = pd.qcut(numbers[present], bins, retbins=True, duplicates="drop")
        names = [f"[{_num(a)}, {_num(b)}{']' if i == len(edges) - 2 else ')'}" for i, (a, b) in
                 enumerate(zip(edges[:-1], edges[1:]))]
        labels[present.to_numpy()] = [names[c] for c in cut.cat.codes]
        return labels, f"{len(names)} quantile bins"
    if numeric:
        labels[present.to_numpy()] = [_num(v) for v in numbers[present]]
    else:
        labels[present.to_numpy()] = values[present].astype(str).str.strip().to_numpy()
    return labels, "values"


def _num(x: float) -> str:
    return f"{x:g}" if float(x).is_integer() or abs(x) >= 100 else f"{x:.3g}"


def subset(preds: dict, idx: np.ndarray) -> dict:
    """The predictions (predict_data's) of the rows at `idx`."""
    return {t: {"output": r["output"][idx], "y": None if r["y"] is None else r["y"][idx], "mask": r["mask"][idx]}
            for t, r in preds.items()}


def slice_metrics(preds: dict, pre, labels: np.ndarray, column: str, how: str) -> dict:
    """-> {"column", "how", "slices": [{"value", "rows", "metrics"}]}, slices in order of their
    label (bins in order of their range, the missing slice last)."""
    order = sorted(set(labels), key=lambda v: (v == MISSING, _bin_start(v), v))
    out = []
    for v in order:
        idx = np.flatnonzero(labels == v)
        out.append({"value": v, "rows": int(len(idx)), "metrics": metrics_from_predictions(subset(preds, idx), pre)})
    return {"column": column, "how": how, "slices": out}


def _bin_start(label: str) -> float:
    try:
        return float(label.strip("[(").split(",")[0]) if label.startswith("[") else float(label)
    except ValueError:
        return float("inf")
