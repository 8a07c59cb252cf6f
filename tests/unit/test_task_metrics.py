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
