"""`model.head: neighbours` in place of the epochs: the training rows go into the heads, and k and the
temperature are chosen on validation.

A k-nearest-neighbours model has nothing to learn by gradient: its "training" is one pass of the
frozen encoders over the training rows (their outputs usually come from the embedding cache, so it
takes seconds) and a small grid over (k, temperature) judged by the validation loss, the score the
recipe's ensemble selection weighs members by. The chosen pair is written into the run's
config.yaml (model.neighbours), so a refit on train + val, `mmfit predict` and the server rebuild
the same model. The run then looks like any other: one record in metrics.jsonl (epoch 0, with the
grid's losses), the weights (the stored rows are buffers) in model.safetensors, the evaluations.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch

from mmfit.evaluation.metrics import monitor_key
from mmfit.models.heads import NeighbourHead
from mmfit.tasks import TaskKind, task_kind
from mmfit.training.embeddings import pooled_rows

KS = (5, 10, 20, 40, 80)
TEMPERATURES = (0.05, 0.1, 0.2, 0.5)


def _heads(model) -> list[tuple[str, str, NeighbourHead]]:
    """(task, which: 'fused' or the modality, head) for every NeighbourHead of the model."""
    out = [(t, "fused", h) for t, h in model.heads.items() if isinstance(h, NeighbourHead)]
    out += [(model.primary_task, m, h) for m, h in model.aux_heads.items() if isinstance(h, NeighbourHead)]
    return out


def training_rows(s) -> tuple[dict, dict, dict, dict, int]:
    """The frozen encoders' pooled outputs, presence, targets and target masks over the training
    rows (a random sample of model.neighbours.max_rows of them where there are more)
    -> (pooled, present, targets, masks, rows before sampling)."""
    read = sorted({m for _, _, h in _heads(s.model) for m in h.modalities})
    pooled, present, targets, masks = pooled_rows(s.model, s.splits["train"], read, s.pre.targets,
                                                  s.cfg.train.batch_size * 2, s.device)
    n, cap = len(s.splits["train"]), s.cfg.model.neighbours.max_rows
    if n > cap:
        keep = torch.from_numpy(np.sort(np.random.default_rng(s.cfg.train.seed).choice(n, cap, replace=False)))
        pooled, present = {m: v[keep] for m, v in pooled.items()}, {m: v[keep] for m, v in present.items()}
        targets, masks = {t: v[keep] for t, v in targets.items()}, {t: v[keep] for t, v in masks.items()}
        s.log(f"neighbours: a random sample of {cap:,} of the {n:,} training rows is kept to compare with "
              "(model.neighbours.max_rows)")
    return pooled, present, targets, masks, n


def target_values(y: torch.Tensor, kind: str | TaskKind, n_out: int) -> torch.Tensor:
    """What a neighbour contributes: a one-hot class, its 0/1 labels, or its (standardised) value."""
    if task_kind(kind).exclusive:
        return torch.nn.functional.one_hot(y.long().clamp(min=0), n_out).float()
    return y.float().reshape(len(y), -1)


def fill(s, validate: Callable[[], dict], val_loss: Callable[[], float]) -> None:
    """Store the training rows in every NeighbourHead; choose k and the temperature on validation
    (where model.neighbours leaves them open) by `val_loss()`, the session's validation loss; write
    the weights, the checkpoint and the record (`validate()`: every validation metric, as an epoch's)."""
    t0, cfg, model = time.time(), s.cfg, s.model
    pooled, present, targets, masks, n = training_rows(s)
    for task, _, head in _heads(model):
        keep = masks[task].bool()
        if not keep.any():
            raise ValueError(f"model.head: neighbours: no training row has a value for data.targets.{task}")
        p = s.pre.targets[task]
        head.fill({m: pooled[m][keep] for m in head.modalities}, {m: present[m][keep] for m in head.modalities},
                  target_values(targets[task][keep], p.kind, p.n_outputs))
    nb = cfg.model.neighbours
    grid = {}
    if s.selects_on_val and (nb.k is None or nb.temperature is None):
        for k in ([nb.k] if nb.k is not None else KS):
            for temp in ([nb.temperature] if nb.temperature is not None else TEMPERATURES):
                for *_, head in _heads(model):
                    head.k, head.temperature = k, temp
                grid[(k, temp)] = val_loss()
        nb.k, nb.temperature = min(grid, key=grid.get)
    nb.k, nb.temperature = nb.k or 10, nb.temperature or 0.1
    for *_, head in _heads(model):
        head.k, head.temperature = nb.k, nb.temperature
    s.log(f"neighbours: {n:,} training rows stored; k {nb.k}, temperature {nb.temperature:g}"
          + (f" (the lowest validation loss of {len(grid)} pairs)" if grid else ""))
    flat = validate() if s.selects_on_val else {}
    key = monitor_key(cfg)[0]
    value = flat.get(key)
    s.state.update(epoch=1, best=value, best_epoch=0, bad_epochs=0, best_loss=flat.get("loss"))
    weights = s.dd.model_state(model)
    if s.dd.main:
        s.run.save_config(cfg, s.given)  # with the chosen k and temperature
        s.keeper.epoch(weights, s.dd.optimizer_state(model, s.optimizer), s.state, True, 0)
        s.run.append_metrics({"epoch": 0, "step": 0, "lr": 0.0, "time_s": time.time() - t0, "train_s": 0.0,
                              "samples_per_s": 0.0, "train": {}, "val": flat, "monitor": key if flat else None,
                              "best": value, "frozen_outputs": s.frozen_outputs or None,
                              "neighbours": {"rows": n, "k": nb.k, "temperature": nb.temperature,
                                             "grid": [{"k": k, "temperature": t, "val_loss": v}
                                                      for (k, t), v in grid.items()]}})
    for k, v in flat.items():
        s.tb.add_scalar(f"val/{k}", v, 0)
    if flat:
        s.log(f"neighbours: val loss {flat['loss']:.3f}" + (f" {key} {value:.4f}" if key != "loss" else ""))
