"""`model.head: trees`: gradient-boosted trees on a table's columns, cross-fitted.

scikit-learn's HistGradientBoosting rather than LightGBM: it is already a dependency (no new wheel
for CI and users), on a few hundred to a few thousand rows it is as accurate (both are
histogram-based GBDTs with the same tree growth; Grinsztajn et al. 2022 find the GBDT family, not
the library, decides), and its fitted trees are plain arrays that TreeHead walks in torch, so the
member exports to ONNX like any other. Per task, over the fitted rows: `folds` models, each fitted
on the other folds with early stopping on a tenth of them; the out-of-fold predictions are each
row's model that did not see it, and the deployed head is the folds' bag (every fold's trees at
1 / folds of their value: the average of their raw scores), so what the selection weighs on
validation is what predicts on test (AutoGluon's bagged models).
"""

from __future__ import annotations

import warnings

import numpy as np

from mmfit.tasks import TaskKind, task_kind
from mmfit.training.convex import _folds

# small trees, a slow rate and early stopping: a few hundred rows overfit deep ones
PARAMS = dict(learning_rate=0.05, max_iter=300, max_leaf_nodes=15, min_samples_leaf=10, l2_regularization=1.0,
              early_stopping=True, validation_fraction=0.1, n_iter_no_change=20)


def _model(kind: str | TaskKind, seed: int):
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    kind = task_kind(kind)
    cls = HistGradientBoostingRegressor if kind.numeric else HistGradientBoostingClassifier
    return cls(random_state=seed, **PARAMS)


def _trees(est, kind: str | TaskKind, n_out: int) -> tuple[list, np.ndarray, np.ndarray]:
    """A fitted model's trees as node arrays and its baseline over n_out outputs
    -> ([(nodes, output index)], baseline [n_out], which outputs it predicts [n_out] bool)."""
    kind = task_kind(kind)
    base = np.zeros(n_out)
    if kind.numeric:
        outputs = [0]
        base[0] = float(np.ravel(est._baseline_prediction)[0])
    else:
        classes = est.classes_.astype(int)
        raw = np.ravel(est._baseline_prediction)
        if len(classes) == 2:  # one logit, of the second class against the first
            outputs = [classes[1]]
            base[:] = -30.0
            base[classes[0]], base[classes[1]] = 0.0, raw[0]
        else:
            outputs = list(classes)
            base[:] = -30.0
            base[classes] = raw
    known = np.zeros(n_out, bool)
    known[[0] if kind.numeric else est.classes_.astype(int)] = True
    return [(p.nodes, outputs[k]) for it in est._predictors for k, p in enumerate(it)], base, known


def _constant(kind: str | TaskKind, y: np.ndarray, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """A fold whose rows hold one class (or a regression without trees): that class, or the mean."""
    kind = task_kind(kind)
    base, known = np.full(n_out, -30.0), np.zeros(n_out, bool)
    if kind.numeric:
        base[0], known[0] = float(y.mean()), True
    else:
        base[int(y[0])], known[int(y[0])] = 0.0, True
    return base, known


def cross_fitted(kind: str | TaskKind, X: np.ndarray, y: np.ndarray, n_out: int, folds: int, seed: int,
                 held: np.ndarray | None = None) -> dict:
    """-> {"trees": arguments of TreeHead.set_trees (the folds' bag), "oof": logits [N, n_out or 1],
    "iterations": boosting rounds each fold kept}. `held`: rows that form a fold of their own
    (training/convex.py _folds: the val rows)."""
    kind = task_kind(kind)
    if kind.exclusive:
        y = y.astype(int)
    splits = _folds(kind, y, folds, seed, held)
    oof = np.zeros((len(y), n_out))
    nodes, outputs, scales, rounds = [], [], [], []
    total, count = np.zeros(n_out), np.zeros(n_out)  # the baselines, averaged over the folds that know each output
    for i, (tr, te) in enumerate(splits):
        if not kind.numeric and len(np.unique(y[tr])) < 2:
            base, known = _constant(kind, y[tr], n_out)
            oof[te] = base
            total, count = total + np.where(known, base, 0.0), count + known
            rounds.append(0)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est = _model(kind, seed + i).fit(X[tr], y[tr])
        trees, base, known = _trees(est, kind, n_out)
        raw = est._raw_predict(X[te])
        if kind.numeric:
            oof[te, 0] = raw[:, 0]
        elif raw.shape[1] == 1:
            classes = est.classes_.astype(int)
            oof[te] = -30.0
            oof[te, classes[0]], oof[te, classes[1]] = 0.0, raw[:, 0]
        else:
            oof[te] = -30.0
            oof[te[:, None], est.classes_.astype(int)[None, :]] = raw
        total, count = total + np.where(known, base, 0.0), count + known
        for n, o in trees:
            nodes.append(n)
            outputs.append(o)
            scales.append(1.0 / len(splits))
        rounds.append(int(est.n_iter_))
    # an output some folds lack: their trees add nothing to it, the others' at 1 / folds; its baseline
    # is theirs (binary folds hold 0 for the first class: the same as the multiclass baseline's offset
    # up to a constant per row, which the softmax ignores)
    baseline = np.where(count > 0, total / np.maximum(count, 1), -30.0)
    if kind.numeric:
        oof = oof[:, :1]
    return {"trees": _arrays(nodes, outputs, scales, baseline), "oof": oof, "iterations": rounds}


def _arrays(nodes: list, outputs: list, scales: list, baseline: np.ndarray) -> dict:
    """Trees' node arrays, end to end (children's indices shifted by where each tree starts)."""
    feature, threshold, left, right, leaf, value, roots = [], [], [], [], [], [], []
    at = 0
    for n, scale in zip(nodes, scales):
        roots.append(at)
        feature.append(n["feature_idx"].astype(np.int64))
        threshold.append(n["num_threshold"].astype(np.float64))
        is_leaf = n["is_leaf"].astype(bool)
        left.append(np.where(is_leaf, 0, n["left"].astype(np.int64)) + at)
        right.append(np.where(is_leaf, 0, n["right"].astype(np.int64)) + at)
        leaf.append(is_leaf)
        value.append(n["value"].astype(np.float64) * scale)
        at += len(n)
    cat = (lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt))
    return {"feature": cat(feature, np.int64), "threshold": cat(threshold, np.float32), "left": cat(left, np.int64),
            "right": cat(right, np.int64), "leaf": cat(leaf, bool), "value": cat(value, np.float32),
            "roots": np.array(roots, np.int64), "output": np.array(outputs, np.int64), "baseline": baseline}
