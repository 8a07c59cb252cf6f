"""Metrics per task kind (scikit-learn), from collected predictions."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn import metrics as skm


def classification_metrics(y: np.ndarray, prob: np.ndarray, classes: list[str], full: bool = False) -> dict:
    pred = prob.argmax(1)
    labels = list(range(len(classes)))
    out = {
        "n": int(len(y)),
        "accuracy": float(skm.accuracy_score(y, pred)) if len(y) else 0.0,
        "macro_f1": float(skm.f1_score(y, pred, labels=labels, average="macro", zero_division=0)),
        "weighted_f1": float(skm.f1_score(y, pred, labels=labels, average="weighted", zero_division=0)),
    }
    if not full:
        return out
    present = sorted(set(y.tolist()))
    if len(present) >= 2:
        # one-vs-rest AUROC over the classes that occur (a class absent from y has no AUROC)
        p = prob[:, present]
        p = p / np.clip(p.sum(1, keepdims=True), 1e-12, None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if len(present) == 2:
                out["auroc"] = float(skm.roc_auc_score(np.array(y) == present[1], p[:, 1]))
            else:
                out["auroc"] = float(skm.roc_auc_score(y, p, multi_class="ovr", labels=present))
    else:
        out["auroc"] = None
    pr, rc, f1, sup = skm.precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    out["per_class"] = {c: {"precision": float(pr[i]), "recall": float(rc[i]), "f1": float(f1[i]),
                            "support": int(sup[i])} for i, c in enumerate(classes)}
    out["confusion_matrix"] = skm.confusion_matrix(y, pred, labels=labels).tolist()
    out["classes"] = classes
    return out


def multilabel_metrics(y: np.ndarray, prob: np.ndarray, classes: list[str], full: bool = False) -> dict:
    pred = (prob >= 0.5).astype(int)
    out = {
        "n": int(len(y)),
        "micro_f1": float(skm.f1_score(y, pred, average="micro", zero_division=0)),
        "macro_f1": float(skm.f1_score(y, pred, average="macro", zero_division=0)),
        "subset_accuracy": float(skm.accuracy_score(y, pred)) if len(y) else 0.0,
    }
    if full:
        f1 = skm.f1_score(y, pred, average=None, zero_division=0)
        out["per_class"] = {c: {"f1": float(f1[i]), "support": int(y[:, i].sum())} for i, c in enumerate(classes)}
    return out


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict:
    err = pred - y
    out = {"n": int(len(y)), "mae": float(np.abs(err).mean()) if len(y) else 0.0,
           "rmse": float(np.sqrt((err ** 2).mean())) if len(y) else 0.0}
    out["r2"] = float(skm.r2_score(y, pred)) if len(y) > 1 else 0.0
    out["neg_rmse"] = -out["rmse"]
    return out


def task_metrics(kind: str, y, outputs, classes, full: bool = False) -> dict:
    if kind == "classification":
        return classification_metrics(y, outputs, classes, full)
    if kind == "multilabel":
        return multilabel_metrics(y, outputs, classes, full)
    return regression_metrics(y, outputs)


def default_metric(kind: str) -> str:
    return {"classification": "macro_f1", "multilabel": "macro_f1", "regression": "r2"}[kind]
