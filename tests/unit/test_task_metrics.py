"""Classification and multi-label metrics: a class of the model that a split neither holds nor
predicts (a rare class that went wholly to train) is not averaged into macro-F1 as a zero."""

import numpy as np
from sklearn.metrics import f1_score

from mmfit.evaluation.metrics import classification_metrics, multilabel_metrics


def test_macro_f1_leaves_out_a_class_neither_held_nor_predicted():
    classes = ["a", "b", "c", "rare"]
    y = np.array([0, 0, 1, 1, 2, 2])
    prob = np.eye(4)[[0, 1, 1, 1, 2, 0]]  # never predicts "rare", which the split does not hold
    m = classification_metrics(y, prob, classes, full=True)
    pred = prob.argmax(1)
    assert m["macro_f1"] == f1_score(y, pred, average="macro")  # scikit-learn's own average, 3 classes
    assert m["macro_f1"] > np.mean([m["per_class"][c]["f1"] for c in classes])  # not dragged by a 0
    assert m["per_class"]["rare"]["support"] == 0  # still listed, with no support
    # predicting a class the split does not hold is a mistake, and counts: its F1 is 0
    wrong = np.eye(4)[[0, 0, 1, 1, 2, 3]]
    m2 = classification_metrics(y, wrong, classes)
    assert m2["macro_f1"] == f1_score(y, wrong.argmax(1), average="macro")
    assert m2["macro_f1"] < classification_metrics(y, np.eye(4)[[0, 0, 1, 1, 2, 2]], classes)["macro_f1"] == 1.0


def test_multilabel_macro_f1_leaves_out_labels_neither_held_nor_predicted():
    y = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0]])
    prob = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.1], [0.7, 0.3, 0.2]])
    m = multilabel_metrics(y, prob, ["x", "y", "never"])
    pred = (prob >= 0.5).astype(int)
    assert m["macro_f1"] == f1_score(y[:, :2], pred[:, :2], average="macro", zero_division=0)
    assert m["macro_f1"] > f1_score(y, pred, average="macro", zero_division=0)


def test_the_per_class_table_says_a_class_is_not_in_the_split():
    from rich.console import Console

    from mmfit.report.tables import print_evaluation

    y = np.array([0, 0, 1, 1])
    m = classification_metrics(y, np.eye(3)[[0, 0, 1, 1]], ["a", "b", "rare"], full=True)
    console = Console(record=True, width=120)
    print_evaluation({"metrics": {"label": m}, "kinds": {"label": "classification"}}, console)
    text = console.export_text()
    assert "0 (not in this split)" in text and m["macro_f1"] == 1.0


def test_the_counted_figures_are_scikit_learns():
    """classification_metrics and multilabel_metrics count from a confusion matrix (scikit-learn's
    checks cost more than the sums): the same figures as scikit-learn's, on random splits with
    missing and never-predicted classes, one row, and none."""
    from sklearn import metrics as skm

    rng = np.random.default_rng(0)
    for trial in range(40):
        n, k = (0, 1)[trial] if trial < 2 else int(rng.integers(2, 30)), int(rng.integers(2, 6))
        y = rng.integers(0, k - int(trial % 3 == 0), n)  # every third split lacks the last class
        prob = rng.random((n, k)) ** 3
        m = classification_metrics(y, prob, [str(i) for i in range(k)], full=True)
        pred = prob.argmax(1)
        if n:
            seen = sorted(set(y.tolist()) | set(pred.tolist()))
            assert m["accuracy"] == skm.accuracy_score(y, pred)
            assert m["macro_f1"] == skm.f1_score(y, pred, labels=seen, average="macro", zero_division=0)
            assert m["weighted_f1"] == skm.f1_score(y, pred, labels=list(range(k)), average="weighted",
                                                    zero_division=0)
            pr, rc, f1, sup = skm.precision_recall_fscore_support(y, pred, labels=list(range(k)), zero_division=0)
            assert [v["precision"] for v in m["per_class"].values()] == pr.tolist()
            assert [v["recall"] for v in m["per_class"].values()] == rc.tolist()
            assert [v["f1"] for v in m["per_class"].values()] == f1.tolist()
            assert [v["support"] for v in m["per_class"].values()] == sup.tolist()
            assert m["confusion_matrix"] == skm.confusion_matrix(y, pred, labels=list(range(k))).tolist()
        else:
            assert m["n"] == 0 and m["accuracy"] == m["macro_f1"] == m["weighted_f1"] == 0.0
        labels = (rng.random((n, k)) < 0.3).astype(int)
        probs = rng.random((n, k))
        ml = multilabel_metrics(labels, probs, [str(i) for i in range(k)], full=True)
        if n:
            p = (probs >= 0.5).astype(int)
            seen = np.flatnonzero(labels.sum(0) + p.sum(0))
            assert ml["micro_f1"] == skm.f1_score(labels, p, average="micro", zero_division=0)
            assert ml["macro_f1"] == (skm.f1_score(labels, p, labels=seen, average="macro", zero_division=0)
                                      if len(seen) else 0.0)
            assert ml["subset_accuracy"] == skm.accuracy_score(labels, p)
            assert [v["f1"] for v in ml["per_class"].values()] == \
                skm.f1_score(labels, p, average=None, zero_division=0).tolist()
