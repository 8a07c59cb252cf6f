"""`model.head: convex`: a logistic (or ridge) regression on the frozen encoders' outputs, its
regularisation chosen by k-fold cross-validation, fitted in closed form (the driver that runs it for
a run, with the trees: training/crossfit.py).

This is the linear probe a practitioner runs first (scikit-learn on frozen features), made a model
like any other: its weights go into ConvexHead buffers (models/heads.py), so prediction, the
server and ONNX export treat it as a linear layer. Per head, over the fitted rows:
- for C (ridge: 1 / alpha) on a grid from strong to weak regularisation, the out-of-fold
  predictions of `model.crossfit.folds` folds of the training rows (stratified by class), and with
  train + val the val rows as one fold more (predicted by a fit on the training rows alone, as
  every other member predicts them: a split that keeps speakers or patients apart stays honest),
  each fold warm-started from its fit at the previous C; the grid stops once the out-of-fold loss
  has risen twice in a row;
- the C of the lowest out-of-fold loss (log loss, or squared error: the proper score the recipe's
  selection weighs members by) over every fold, or over the val fold alone
  (`model.crossfit.choose_on: val`, the recipe's choice where the split keeps groups apart), then
  one fit on all the rows at that C.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from mmfit.tasks import ONE_LABEL, TaskKind, task_kind

CS = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
ABSENT = -30.0  # the logit of a class no fitted row holds (softmax: probability ~1e-13)


def _estimator(kind: str | TaskKind, c: float):
    kind = task_kind(kind)
    from sklearn.linear_model import LogisticRegression, Ridge

    if kind.numeric:
        return Ridge(alpha=1.0 / c)
    return LogisticRegression(C=c, max_iter=300, tol=1e-3, warm_start=True)


def _fit(est, kind: str | TaskKind, X: np.ndarray, y: np.ndarray, n_out: int):
    """Fit `est` (one per label for multilabel) -> the estimator(s), or a constant where y has one value."""
    kind = task_kind(kind)
    if kind.label_set:
        return [_fit(e, ONE_LABEL, X, y[:, j].astype(int), 2) for j, e in enumerate(est)]
    if kind.exclusive and len(np.unique(y)) < 2:
        return ("constant", int(y[0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs' iteration cap at a weak C: the grid decides, not the optimum
        return est.fit(X, y)


def _linear(fitted, kind: str | TaskKind, n_out: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A fitted estimator as (weight [n_out, width], bias [n_out]): logits over all n_out classes (a
    class its rows lacked at ABSENT), one logit per label, or the value."""
    kind = task_kind(kind)
    if kind.label_set:
        parts = [_linear(f, ONE_LABEL, 2, width) for f in fitted]
        return np.stack([w[1] - w[0] for w, _ in parts]), np.array([b[1] - b[0] for _, b in parts])
    W, b = np.zeros((n_out, width)), np.zeros(n_out)
    if isinstance(fitted, tuple):  # one class in the rows: it alone
        b[:] = ABSENT
        b[fitted[1]] = 0.0
        return W, b
    if kind.numeric:
        return fitted.coef_.reshape(1, -1), np.atleast_1d(fitted.intercept_).astype(float)
    classes = fitted.classes_.astype(int)
    b[:] = ABSENT
    if len(classes) == 2:  # sklearn's binary model: one logit, of the second class against the first
        W[classes[1]], b[classes[1]], b[classes[0]] = fitted.coef_[0], fitted.intercept_[0], 0.0
    else:
        W[classes], b[classes] = fitted.coef_, fitted.intercept_
    return W, b


def _loss(kind: str | TaskKind, logits: np.ndarray, y: np.ndarray) -> float:
    kind = task_kind(kind)
    t = torch.from_numpy(logits).float()
    if kind.exclusive:
        return float(torch.nn.functional.cross_entropy(t, torch.from_numpy(y).long()))
    if kind.label_set:
        return float(torch.nn.functional.binary_cross_entropy_with_logits(t, torch.from_numpy(y).float()))
    return float(((logits[:, 0] - y) ** 2).mean())


def _folds(kind: str | TaskKind, y: np.ndarray, k: int, seed: int, held: np.ndarray | None = None) -> list:
    """k folds over the rows (stratified by class where every class can fill them), and with `held`
    (a bool per row: the val rows) those rows as one more fold of their own: their predictions then
    come from a model fitted on the other rows alone, as every other member's do, whatever groups
    (speakers, patients) the split kept apart. -> [(fitting rows, predicted rows)]."""
    kind = task_kind(kind)
    if held is not None and held.any() and (~held).any():
        inner = np.flatnonzero(~held)
        out = [(inner[tr], inner[te]) for tr, te in _folds(kind, y[inner], k, seed)]
        return out + [(inner, np.flatnonzero(held))]
    from sklearn.model_selection import KFold, StratifiedKFold

    k = max(2, min(k, len(y)))
    if kind.exclusive and np.bincount(y).max() >= k:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a class with fewer rows than folds: in some folds only
            return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))
    return list(KFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y))))


def cross_validated(kind: str | TaskKind, X: np.ndarray, y: np.ndarray, n_out: int, folds: int, seed: int,
                    held: np.ndarray | None = None, judge: np.ndarray | None = None) -> dict:
    """C by k-fold cross-validation (warm-started along the grid, stopped once the out-of-fold loss
    has risen twice in a row), then one fit on all the rows -> {weight, bias, c, oof (logits),
    grid: [(C, out-of-fold loss)]}. `held`: rows that form a fold of their own (_folds); `judge`:
    the rows whose out-of-fold loss chooses C (default all)."""
    kind = task_kind(kind)
    if kind.exclusive:
        y = y.astype(int)
    splits = _folds(kind, y, folds, seed, held)
    judged = np.ones(len(y), bool) if judge is None or not judge.any() else judge
    ests = [None] * len(splits)
    grid, best, rises = [], None, 0
    width = X.shape[1]
    for c in CS:
        oof = np.zeros((len(y), 1 if kind.numeric else n_out))
        for i, (tr, te) in enumerate(splits):
            if ests[i] is None:
                ests[i] = ([_estimator(kind, c) for _ in range(n_out)] if kind.label_set
                           else _estimator(kind, c))
            for e in ests[i] if kind.label_set else [ests[i]]:
                e.set_params(**({"alpha": 1.0 / c} if kind.numeric else {"C": c}))
            fitted = _fit(ests[i], kind, X[tr], y[tr], n_out)
            W, b = _linear(fitted, kind, n_out, width)
            oof[te] = X[te] @ W.T + b
        loss = _loss(kind, oof[judged], y[judged])
        grid.append((c, loss))
        if best is None or loss < best[1]:
            best, rises = (c, loss, oof), 0
        else:
            rises += 1
            if rises >= 2:
                break
    c, _, oof = best
    est = [_estimator(kind, c) for _ in range(n_out)] if kind.label_set else _estimator(kind, c)
    W, b = _linear(_fit(est, kind, X, y, n_out), kind, n_out, width)
    return {"weight": W, "bias": b, "c": c, "oof": oof, "grid": grid}
