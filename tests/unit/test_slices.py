"""Slices of the rows by a column: labels (values, quantile bins, missing), and per-slice metrics
that add back up to the whole."""

import numpy as np
import pandas as pd

from mmfit.evaluation.slices import MISSING, slice_labels, slice_metrics
from mmfit.tasks import task_kind


def test_labels_values_bins_and_missing():
    labels, how = slice_labels(pd.Series(["s1", "s2", "", None, "s1"]))
    assert list(labels) == ["s1", "s2", MISSING, MISSING, "s1"] and how == "values"
    labels, how = slice_labels(pd.Series(["1", "2", "2", "1.0"]), bins=4)  # few numbers: each its own slice
    assert list(labels) == ["1", "2", "2", "1"]
    ages = pd.Series([str(a) for a in range(20, 100)] + [""])
    labels, how = slice_labels(ages, bins=4)
    assert how == "4 quantile bins" and labels[-1] == MISSING
    counts = pd.Series(labels[:-1]).value_counts()
    assert len(counts) == 4 and counts.min() == 20 and labels[0].startswith("[20,") and labels[-2].endswith("]")


class _Proc:
    def __init__(self, type, classes=()):
        self.type, self.kind, self.classes = type, task_kind(type), list(classes)


def test_slice_metrics_add_back_up_to_the_whole():
    from mmfit.evaluation.predict import metrics_from_predictions

    rng = np.random.default_rng(0)
    n = 60
    y = rng.integers(0, 3, n)
    probs = rng.dirichlet(np.ones(3), n)
    value = rng.normal(size=n)
    mask = rng.random(n) > 0.1  # a few rows without this target
    preds = {"label": {"output": probs, "y": y, "mask": mask},
             "score": {"output": value + rng.normal(0, 0.1, n), "y": value, "mask": np.ones(n, bool)}}
    pre = type("P", (), {"targets": {"label": _Proc("classification", "abc"), "score": _Proc("regression")}})()
    labels = np.array(rng.choice(["x", "y", "z", MISSING], n), dtype=object)
    out = slice_metrics(preds, pre, labels, "site", "values")
    whole = metrics_from_predictions(preds, pre)
    assert [s["value"] for s in out["slices"]] == ["x", "y", "z", MISSING]  # missing last
    assert sum(s["rows"] for s in out["slices"]) == n
    assert sum(s["metrics"]["label"]["n"] for s in out["slices"]) == whole["label"]["n"] == mask.sum()
    acc = sum(s["metrics"]["label"]["accuracy"] * s["metrics"]["label"]["n"] for s in out["slices"]) / mask.sum()
    assert abs(acc - whole["label"]["accuracy"]) < 1e-9
    mse = sum(s["metrics"]["score"]["rmse"] ** 2 * s["rows"] for s in out["slices"]) / n
    assert abs(mse - whole["score"]["rmse"] ** 2) < 1e-9
