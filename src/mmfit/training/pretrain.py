"""`mmfit pretrain`: self-supervised pretraining of a config's encoders on its manifest's inputs
(targets, if any, hidden; the objectives are models/pretrain.py's). It is the training loop
(training/loop.py) with another model and objective: the same run directory, progress bar,
TensorBoard, checkpoints, exact resume and early stopping (on the validation rows' scale-free loss).
Its run's encoders are what `model.encoders.<m>.init: RUN` starts training from."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable, Optional

import pandas as pd
import torch
from rich.console import Console

from mmfit.config import PRETRAIN_TERMS, Config
from mmfit.models.finetune import count_parameters, parameter_summary, summary_line, trainable_summary
from mmfit.models.model import build_encoders
from mmfit.models.pretrain import Pretrainer
from mmfit.run.store import encoder_inits
from mmfit.training.loop import _data, _parts, _start, finish, fit_epochs, param_groups, seed_everything


def pretraining_config(cfg: Config) -> Config:
    """The config a pretraining run records: no targets (they stay in the manifest, unread), its
    weights kept on the validation rows' scale-free loss (`log_loss`, models/pretrain.py), or on the
    total or one objective's term where train.monitor names it ('loss', 'contrastive/image~text')."""
    cfg = copy.deepcopy(cfg)
    cfg.data.targets = {}
    named = cfg.train.monitor or ""
    if named not in ("loss", "log_loss") and named.split("/")[0] not in PRETRAIN_TERMS:
        cfg.train.monitor = "log_loss"
    cfg.recipe.enabled = False
    return cfg


def pretrain(cfg: Optional[Config] = None, df: Optional[pd.DataFrame] = None, run_dir: Optional[Path] = None, *,
             resume: Optional[Path] = None, console: Optional[Console] = None,
             on_epoch: Optional[Callable[[int, float], None]] = None) -> Path:
    """Pretrain; returns the run directory. `resume=RUN` continues it from its last checkpoint;
    `on_epoch(epoch, validation loss)` as in training (an exception it raises ends the run there)."""
    s = _start(pretraining_config(cfg) if cfg is not None else None, run_dir, resume, console or Console())
    s.pretraining = True
    _data(s, df, None)
    _model(s)
    _parts(s, df)
    try:
        fit_epochs(s, on_epoch)
    finally:
        s.tb.close()
    return finish(s)


def _model(s) -> None:
    cfg, dd = s.cfg, s.dd
    seed_everything(cfg.train.seed)
    inits = {} if s.resuming else encoder_inits(cfg)
    encoders = build_encoders(cfg, s.pre, init_states={m: r.encoder_state(m) for m, r in inits.items()})
    model = Pretrainer(encoders, cfg, s.pre).to(s.device)
    objectives = model.objectives()
    if not objectives:
        raise ValueError("pretrain: no objective applies: text encoders need pretrain.mlm > 0, image and "
                         "spectrogram encoders pretrain.masked_patches > 0, two or more modalities "
                         "pretrain.contrastive > 0, and the encoders must not be frozen for the first two")
    if dd.main and not s.resuming:
        s.run.save_architectures(model)
        s.run.save_params(parameter_summary(model))
    s.model, s.net = model, dd.wrap(model, cfg.train.strategy)
    s.optimizer = torch.optim.AdamW(param_groups(model, cfg), lr=cfg.train.lr)
    n_params, n_train = count_parameters(model)
    s.log(f"pretraining: {', '.join(objectives)}; {n_params / 1e6:.2f}M parameters ({n_train / 1e6:.3f}M trainable)")
    s.log(summary_line(trainable_summary(model)))
