"""`model.head: convex` (and `trees`) in place of the epochs: a logistic (or ridge) regression on the
frozen encoders' outputs, its regularisation chosen by k-fold cross-validation, fitted in closed
form (gradient-boosted trees on the table: training/trees.py, through the same driver, `fit`).

This is the linear probe a practitioner runs first (scikit-learn on frozen features), made a model
like any other: its weights go into ConvexHead buffers (models/heads.py), so prediction, the
server and ONNX export treat it as a linear layer. Per head (each task on every frozen modality,
and for the first task each modality alone), over the fitted rows:
- features standardised with those rows' mean and spread (a missing modality: 0, its mean);
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
The out-of-fold predictions at the chosen C are kept in RUN/oof.npz (rows, logits per head): with
`model.crossfit.rows: labelled` the rows are train + val, and the validation figures (metrics.jsonl,
the recipe's selection) are the out-of-fold ones, so no row is scored by weights that saw it.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import torch

from mmfit.evaluation.metrics import monitor_key
from mmfit.evaluation.predict import metrics_from_predictions
from mmfit.models.heads import ConvexHead, TreeHead, standardisation
from mmfit.run import CHECKPOINT, OOF
from mmfit.training import checkpoint as ckpt
from mmfit.training.embeddings import pooled_rows

CS = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
ABSENT = -30.0  # the logit of a class no fitted row holds (softmax: probability ~1e-13)


FITTED = (ConvexHead, TreeHead)


def _heads(model) -> list[tuple[str, str, object]]:
    """(task, candidate name as the ensemble calls it: 'fused' or 'aux:<modality>', head)."""
    out = [(t, "fused", h) for t, h in model.heads.items() if isinstance(h, FITTED)]
    out += [(model.primary_task, f"aux:{m}", h) for m, h in model.aux_heads.items() if isinstance(h, FITTED)]
    return out


def _estimator(kind: str, c: float):
    from sklearn.linear_model import LogisticRegression, Ridge

    if kind == "regression":
        return Ridge(alpha=1.0 / c)
    return LogisticRegression(C=c, max_iter=300, tol=1e-3, warm_start=True)


def _fit(est, kind: str, X: np.ndarray, y: np.ndarray, n_out: int):
    """Fit `est` (one per label for multilabel) -> the estimator(s), or a constant where y has one value."""
    if kind == "multilabel":
        return [_fit(e, "classification", X, y[:, j].astype(int), 2) for j, e in enumerate(est)]
    if kind == "classification" and len(np.unique(y)) < 2:
        return ("constant", int(y[0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs' iteration cap at a weak C: the grid decides, not the optimum
        return est.fit(X, y)


def _linear(fitted, kind: str, n_out: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A fitted estimator as (weight [n_out, width], bias [n_out]): logits over all n_out classes (a
    class its rows lacked at ABSENT), one logit per label, or the value."""
    if kind == "multilabel":
        parts = [_linear(f, "classification", 2, width) for f in fitted]
        return np.stack([w[1] - w[0] for w, _ in parts]), np.array([b[1] - b[0] for _, b in parts])
    W, b = np.zeros((n_out, width)), np.zeros(n_out)
    if isinstance(fitted, tuple):  # one class in the rows: it alone
        b[:] = ABSENT
        b[fitted[1]] = 0.0
        return W, b
    if kind == "regression":
        return fitted.coef_.reshape(1, -1), np.atleast_1d(fitted.intercept_).astype(float)
    classes = fitted.classes_.astype(int)
    b[:] = ABSENT
    if len(classes) == 2:  # sklearn's binary model: one logit, of the second class against the first
        W[classes[1]], b[classes[1]], b[classes[0]] = fitted.coef_[0], fitted.intercept_[0], 0.0
    else:
        W[classes], b[classes] = fitted.coef_, fitted.intercept_
    return W, b


def _loss(kind: str, logits: np.ndarray, y: np.ndarray) -> float:
    t = torch.from_numpy(logits).float()
    if kind == "classification":
        return float(torch.nn.functional.cross_entropy(t, torch.from_numpy(y).long()))
    if kind == "multilabel":
        return float(torch.nn.functional.binary_cross_entropy_with_logits(t, torch.from_numpy(y).float()))
    return float(((logits[:, 0] - y) ** 2).mean())


def _folds(kind: str, y: np.ndarray, k: int, seed: int, held: np.ndarray | None = None) -> list:
    """k folds over the rows (stratified by class where every class can fill them), and with `held`
    (a bool per row: the val rows) those rows as one more fold of their own: their predictions then
    come from a model fitted on the other rows alone, as every other member's do, whatever groups
    (speakers, patients) the split kept apart. -> [(fitting rows, predicted rows)]."""
    if held is not None and held.any() and (~held).any():
        inner = np.flatnonzero(~held)
        out = [(inner[tr], inner[te]) for tr, te in _folds(kind, y[inner], k, seed)]
        return out + [(inner, np.flatnonzero(held))]
    from sklearn.model_selection import KFold, StratifiedKFold

    k = max(2, min(k, len(y)))
    if kind == "classification" and np.bincount(y).max() >= k:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a class with fewer rows than folds: in some folds only
            return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))
    return list(KFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y))))


def cross_validated(kind: str, X: np.ndarray, y: np.ndarray, n_out: int, folds: int, seed: int,
                    held: np.ndarray | None = None, judge: np.ndarray | None = None) -> dict:
    """C by k-fold cross-validation (warm-started along the grid, stopped once the out-of-fold loss
    has risen twice in a row), then one fit on all the rows -> {weight, bias, c, oof (logits),
    grid: [(C, out-of-fold loss)]}. `held`: rows that form a fold of their own (_folds); `judge`:
    the rows whose out-of-fold loss chooses C (default all)."""
    if kind == "classification":
        y = y.astype(int)
    splits = _folds(kind, y, folds, seed, held)
    judged = np.ones(len(y), bool) if judge is None or not judge.any() else judge
    ests = [None] * len(splits)
    grid, best, rises = [], None, 0
    width = X.shape[1]
    for c in CS:
        oof = np.zeros((len(y), 1 if kind == "regression" else n_out))
        for i, (tr, te) in enumerate(splits):
            if ests[i] is None:
                ests[i] = ([_estimator(kind, c) for _ in range(n_out)] if kind == "multilabel"
                           else _estimator(kind, c))
            for e in ests[i] if kind == "multilabel" else [ests[i]]:
                e.set_params(**({"alpha": 1.0 / c} if kind == "regression" else {"C": c}))
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
    est = [_estimator(kind, c) for _ in range(n_out)] if kind == "multilabel" else _estimator(kind, c)
    W, b = _linear(_fit(est, kind, X, y, n_out), kind, n_out, width)
    return {"weight": W, "bias": b, "c": c, "oof": oof, "grid": grid}


def _standardise(head: ConvexHead, pooled: dict, present: dict) -> np.ndarray:
    """Set the head's mean and scale from the fitted rows (each modality over the rows that have it)
    -> those rows' features."""
    head.mean, head.scale = standardisation(pooled, present, head.modalities)
    with torch.no_grad():
        return head.features({m: _Pooled(pooled[m]) for m in head.modalities}, present).double().numpy()


class _Pooled:
    """Pooled outputs standing in for an EncoderOutput."""

    def __init__(self, pooled: torch.Tensor):
        self.pooled = pooled


def fit(s, validate) -> None:
    """Fit every ConvexHead on the fitted rows (model.crossfit.rows), keep the out-of-fold logits
    (RUN/oof.npz), write the weights, the checkpoint and the record. `validate()`: the validation
    metrics of the fitted weights (only where val is not among the fitted rows)."""
    t0, cfg, model = time.time(), s.cfg, s.model
    labelled = cfg.model.crossfit.rows == "labelled"
    parts = [s.splits["train"]] + ([s.splits["val"]] if labelled and len(s.splits["val"]) else [])
    read = sorted({m for *_, h in _heads(model) for m in h.modalities})
    got = [pooled_rows(model, d, read, s.pre.targets, cfg.train.batch_size * 2, s.device) for d in parts]
    pooled, present, targets, masks = ({k: torch.cat([g[i][k] for g in got]) for k in got[0][i]} for i in range(4))
    rows = torch.cat([d.rows for d in parts]).numpy()
    held = np.zeros(len(rows), bool)  # the val rows: a fold of their own
    held[len(s.splits["train"]):] = labelled
    # where the split keeps groups apart (a split column, a group column) the val fold alone says how
    # the model does on new ones: it chooses C; otherwise every fold does
    judge = held if cfg.model.crossfit.choose_on == "val" else None
    oof, record = {}, []
    for task, name, head in _heads(model):
        keep = masks[task].bool().numpy()
        if not keep.any():
            raise ValueError(f"model.head: convex: no fitted row has a value for data.targets.{task}")
        p = s.pre.targets[task]
        y = targets[task].numpy()
        folds = cfg.model.crossfit.folds
        if isinstance(head, TreeHead):
            from mmfit.training.trees import cross_fitted

            with torch.no_grad():
                X = head.features({m: _Pooled(pooled[m]) for m in head.modalities}, present).numpy()
            res = cross_fitted(p.type, X[keep], y[keep], p.n_outputs, folds, cfg.train.seed, held[keep])
            head.set_trees(**res["trees"])
            loss = _loss(p.type, res["oof"], y[keep])
            record.append({"task": task, "head": name, "rows": int(keep.sum()), "iterations": res["iterations"],
                           "trees": len(head.roots), "oof_loss": round(loss, 5)})
            s.log(f"trees {task}/{name}: {len(head.roots)} trees over {folds} folds of {int(keep.sum())} rows "
                  f"(boosting rounds {res['iterations']}; out-of-fold loss {loss:.4f})")
        else:
            X = _standardise(head, pooled, present)
            res = cross_validated(p.type, X[keep], y[keep], p.n_outputs, folds, cfg.train.seed, held[keep],
                                  None if judge is None else judge[keep])
            head.weight = torch.from_numpy(res["weight"]).float()
            head.bias = torch.from_numpy(res["bias"]).float()
            record.append({"task": task, "head": name, "C": res["c"], "rows": int(keep.sum()),
                           "grid": [{"C": c, "oof_loss": round(v, 5)} for c, v in res["grid"]]})
            s.log(f"convex {task}/{name}: C {res['c']:g} by {folds}-fold cross-validation over "
                  f"{int(keep.sum())} rows (out-of-fold loss {min(v for _, v in res['grid']):.4f}"
                  + (", judged on the val fold" if judge is not None else "") + ")")
        full = np.full((len(rows), res["oof"].shape[1]), np.nan, np.float32)
        full[keep] = res["oof"]
        oof[f"logits/{task}/{name}"] = full
    oof["rows"] = rows
    flat = {}
    if labelled:  # the validation figures: the out-of-fold logits of the val rows
        flat = _oof_validation(s, oof, rows)
    elif s.selects_on_val:
        flat = validate()
    key = monitor_key(cfg)[0]
    value = flat.get(key)
    s.state.update(epoch=1, best=value, best_epoch=0, bad_epochs=0, best_loss=flat.get("loss"))
    if labelled:
        s.state["val_note"] = ("model.crossfit.rows: labelled: these weights were fitted on the val rows too; their "
                               "out-of-fold figures are in metrics.jsonl and oof.npz")
    weights = s.dd.model_state(model)
    if s.dd.main:
        s.run.write_arrays(OOF, oof)
        s.run.save_weights(weights, {"epoch": "0"})
        ckpt.save_training(s.run / CHECKPOINT, weights, s.dd.optimizer_state(model, s.optimizer), s.state)
        s.run.append_metrics({"epoch": 0, "step": 0, "lr": 0.0, "time_s": time.time() - t0, "train_s": 0.0,
                              "samples_per_s": 0.0, "train": {}, "val": flat, "monitor": key if flat else None,
                              "best": value, "frozen_outputs": s.frozen_outputs or None,
                              cfg.model.head: {"rows": cfg.model.crossfit.rows, "folds": cfg.model.crossfit.folds,
                                                "heads": record}})
    for k, v in flat.items():
        s.tb.add_scalar(f"val/{k}", v, 0)
    if flat and key in flat:
        s.log(f"{cfg.model.head}: val {key} {value:.4f}" + (" (out of fold)" if labelled else ""))


def _oof_validation(s, oof: dict, rows: np.ndarray) -> dict:
    """Validation metrics (flat, as an epoch's) of the fused heads' out-of-fold logits at the val rows."""
    val = s.splits["val"]
    if not len(val):
        return {}
    at = {int(r): i for i, r in enumerate(rows)}
    idx = np.array([at[int(r)] for r in val.rows.numpy()])
    preds = {}
    for t, p in s.pre.targets.items():
        logits = torch.from_numpy(np.nan_to_num(oof[f"logits/{t}/fused"][idx]))
        y = val.targets[t].numpy()
        if p.type == "classification":
            out = torch.softmax(logits, -1).numpy()
        elif p.type == "multilabel":
            out = torch.sigmoid(logits).numpy()
        else:
            out, y = logits[:, 0].numpy() * p.std + p.mean, y * p.std + p.mean
        preds[t] = {"output": out, "y": y, "mask": val.target_mask[t].numpy()}
    metrics = metrics_from_predictions(preds, s.pre)
    flat = {f"{t}/{k}": v for t, ms in metrics.items() for k, v in ms.items() if k != "n"}
    losses = []
    for t, p in s.pre.targets.items():
        m = val.target_mask[t].numpy().astype(bool)
        if m.any():
            lg = np.nan_to_num(oof[f"logits/{t}/fused"][idx][m])
            losses.append(_loss(p.type, lg, val.targets[t].numpy()[m]))
    flat["loss"] = float(np.mean(losses)) if losses else float("nan")
    return flat
