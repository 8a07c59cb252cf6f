"""`model.head: convex` and `trees` in place of the epochs: heads fitted in closed form, cross-fitted.

The driver (`fit_folds`) gathers the frozen encoders' pooled outputs of the fitted rows
(`model.crossfit.rows`: train, or train + val), standardises them (convex) or takes them as they are
(trees: the table), fits every head by k folds (training/convex.py `cross_validated`: logistic /
ridge regression, C by cross-validation; training/trees.py `cross_fitted`: gradient-boosted trees
bagged over the folds), and keeps the out-of-fold logits in RUN/oof.npz (rows, logits per head):
with train + val the val rows are a fold of their own, and the validation figures (metrics.jsonl,
the recipe's selection) are the out-of-fold ones, so no row is scored by weights that saw it.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from mmfit.evaluation.metrics import monitor_key
from mmfit.evaluation.predict import metrics_from_predictions, outputs_from_logits
from mmfit.models.heads import ConvexHead, Pooled, TreeHead, standardisation
from mmfit.run.layout import OOF
from mmfit.training.convex import _loss, cross_validated
from mmfit.training.embeddings import pooled_rows
from mmfit.training.trees import cross_fitted

FITTED = (ConvexHead, TreeHead)


def _heads(model) -> list[tuple[str, str, object]]:
    """(task, candidate name as the ensemble calls it: 'fused' or 'aux:<modality>', head)."""
    out = [(t, "fused", h) for t, h in model.heads.items() if isinstance(h, FITTED)]
    out += [(model.primary_task, f"aux:{m}", h) for m, h in model.aux_heads.items() if isinstance(h, FITTED)]
    return out


def _standardise(head: ConvexHead, pooled: dict, present: dict) -> np.ndarray:
    """Set the head's mean and scale from the fitted rows (each modality over the rows that have it)
    -> those rows' features."""
    head.mean, head.scale = standardisation(pooled, present, head.modalities)
    with torch.no_grad():
        return head.features({m: Pooled(pooled[m]) for m in head.modalities}, present).double().numpy()


def fit_folds(s, validate) -> None:
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
            raise ValueError(f"model.head: {cfg.model.head}: no fitted row has a value for data.targets.{task}")
        p = s.pre.targets[task]
        y = targets[task].numpy()
        folds = cfg.model.crossfit.folds
        if isinstance(head, TreeHead):
            with torch.no_grad():
                X = head.features({m: Pooled(pooled[m]) for m in head.modalities}, present).numpy()
            res = cross_fitted(p.kind, X[keep], y[keep], p.n_outputs, folds, cfg.train.seed, held[keep])
            head.set_trees(**res["trees"])
            loss = _loss(p.kind, res["oof"], y[keep])
            record.append({"task": task, "head": name, "rows": int(keep.sum()), "iterations": res["iterations"],
                           "trees": len(head.roots), "oof_loss": round(loss, 5)})
            s.log(f"trees {task}/{name}: {len(head.roots)} trees over {folds} folds of {int(keep.sum())} rows "
                  f"(boosting rounds {res['iterations']}; out-of-fold loss {loss:.4f})")
        else:
            X = _standardise(head, pooled, present)
            res = cross_validated(p.kind, X[keep], y[keep], p.n_outputs, folds, cfg.train.seed, held[keep],
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
        flat = _oof_validation(s, oof)
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
        s.keeper.epoch(weights, s.dd.optimizer_state(model, s.optimizer), s.state, True, 0)
        s.run.append_metrics({"epoch": 0, "step": 0, "lr": 0.0, "time_s": time.time() - t0, "train_s": 0.0,
                              "samples_per_s": 0.0, "train": {}, "val": flat, "monitor": key if flat else None,
                              "best": value, "frozen_outputs": s.frozen_outputs or None,
                              cfg.model.head: {"rows": cfg.model.crossfit.rows, "folds": cfg.model.crossfit.folds,
                                                "heads": record}})
    for k, v in flat.items():
        s.tb.add_scalar(f"val/{k}", v, 0)
    if flat and key in flat:
        s.log(f"{cfg.model.head}: val {key} {value:.4f}" + (" (out of fold)" if labelled else ""))


def oof_logits(oof: dict, rows: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """The out-of-fold logits (an oof.npz's arrays) of the given manifest rows, in their order (NaN,
    a row without that task's target, as 0) -> {task: {head: logits}}."""
    at = {int(r): i for i, r in enumerate(oof["rows"])}
    idx = np.array([at[int(r)] for r in rows], dtype=np.int64)
    out: dict = {}
    for key, v in oof.items():
        if key.startswith("logits/"):
            _, task, head = key.split("/", 2)
            out.setdefault(task, {})[head] = np.nan_to_num(v[idx]).astype(np.float32)
    return out


def _oof_validation(s, oof: dict) -> dict:
    """Validation metrics (flat, as an epoch's) of the fused heads' out-of-fold logits at the val rows."""
    val = s.splits["val"]
    if not len(val):
        return {}
    logits = oof_logits(oof, val.rows.numpy())
    preds, losses = {}, []
    for t, p in s.pre.targets.items():
        y, mask = val.targets[t].numpy(), val.target_mask[t].numpy()
        lg = logits[t]["fused"]
        preds[t] = {"output": outputs_from_logits(torch.from_numpy(lg), p),
                    "y": y * p.std + p.mean if p.kind.numeric else y, "mask": mask}
        m = mask.astype(bool)
        if m.any():
            losses.append(_loss(p.kind, lg[m], y[m]))
    metrics = metrics_from_predictions(preds, s.pre)
    flat = {f"{t}/{k}": v for t, ms in metrics.items() for k, v in ms.items() if k != "n"}
    flat["loss"] = float(np.mean(losses)) if losses else float("nan")
    return flat
