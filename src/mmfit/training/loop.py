"""The fit loop in three stages, each read top to bottom: set up (run directory, data, model,
optimiser, or all of them back from a checkpoint) -> fit (epochs: train, validate, keep the best,
stop early) -> finish (evaluate the kept weights on val and test).

Features are visible `if` branches here, not callbacks: accumulation, clipping, bf16, modality
dropout, augmentation and mixup, distillation, sparsity masks, early stopping, atomic checkpoints,
resume, TensorBoard and metrics.jsonl. Every file goes through the run store (mmfit.run.store).
"""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mmfit.config import Config, encoder_config
from mmfit.data.augment import Augmenter, permuted_targets
from mmfit.data.batch import Loader, TensorData
from mmfit.data.cache import FeatureCache
from mmfit.data.prepare import decode_share, prepare_training
from mmfit.evaluation.metrics import monitor_key
from mmfit.evaluation.predict import evaluate_data, metrics_from_predictions, predict_data
from mmfit.models.finetune import (adapter_states, backbone, count_parameters, has_adapters, layer_lr_scales,
                                   parameter_summary, summary_line, trainable_summary)
from mmfit.models.mixup import mixed_presence
from mmfit.models.model import build_model, trim_vocabularies
from mmfit.models.pretrain import pretrain_losses
from mmfit.models.surgery import apply_masks, conform_to_state, sparsity_masks
from mmfit.registry import encoder_info
from mmfit.run.checkpoints import load_weights
from mmfit.run.layout import CHECKPOINT, CONFIG, TB
from mmfit.run.loaded import build_run_model
from mmfit.run.store import Run, encoder_inits, init_texts, new_run_dir, resolve_paths
from mmfit.training.distill import Teacher, combine
from mmfit.device import resolve_device
from mmfit.training.distributed import Dist
from mmfit.training.embeddings import cache_outputs, cached_modalities
from mmfit.models.losses import total_loss


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def param_groups(model, cfg: Config) -> list[dict]:
    """Pretrained encoders get a small learning rate (decayed layer by layer when
    finetune.layer_decay < 1); new layers the main one. No weight decay on biases, norms,
    vectors, or adapters' scaling vectors."""
    groups: dict[tuple[float, float], list] = {}
    wd = cfg.train.weight_decay

    def add(p, lr):
        if p.requires_grad:
            groups.setdefault((lr, 0.0 if p.ndim <= 1 else wd), []).append(p)

    for m, enc in model.encoders.items():
        ec = encoder_config(cfg, m)
        pretrained = getattr(enc, "pretrained", False)  # build_encoder sets it from the registry
        # the small rate protects pretrained weights; adapters and BitFit's biases are what should
        # move, so they default to the new-layer rate
        small = pretrained and ec.finetune.strategy not in ("lora", "ia3", "bitfit")
        lr = ec.lr or (cfg.train.pretrained_lr if small else cfg.train.lr)
        decay = ec.finetune.layer_decay
        scales = layer_lr_scales(backbone(enc), decay) if pretrained and decay < 1 else {}
        for name, p in backbone(enc).named_parameters():  # a video's temporal pooling: new, as below
            add(p, lr * scales.get(name, 1.0))
    enc_ids = {id(p) for enc in model.encoders.values() for p in backbone(enc).parameters()}
    for p in model.parameters():
        if id(p) not in enc_ids:
            add(p, cfg.train.lr)
    return [{"params": ps, "lr": lr, "base_lr": lr, "weight_decay": w} for (lr, w), ps in groups.items()]


def lr_factor(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def epochs_within(done: int, left: float, each: float, most: int) -> int:
    """How many epochs a time-limited run will have run in all: the `done` ones and as many more of
    `each` seconds as fit in the `left` seconds, at least the one about to start, at most `most`."""
    return max(done + 1, min(most, done + int(left // max(each, 1e-9))))


def plan_schedule(s: "Session", epochs: int) -> None:
    """Lay the learning-rate schedule (warmup, then cosine decay to zero) over `epochs` epochs. Under
    train.time_limit the plan shrinks to the epochs that fit (Li et al. 2020, budgeted training: a
    schedule that ends with the budget beats a longer one cut off while its rate is still high); it is
    kept in the trainer state, so a resumed run goes on with it."""
    s.total_steps = s.steps_per_epoch * epochs
    s.warmup = int(s.cfg.train.warmup_ratio * s.total_steps)
    if epochs != s.cfg.train.epochs or "planned_epochs" in s.state:
        s.state["planned_epochs"] = epochs


def modality_dropout(present: dict[str, torch.Tensor], p: float, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Mask each present modality of a row with chance p, always keeping one present modality."""
    if p <= 0 or len(present) < 2:
        return present
    names = list(present)
    pres = torch.stack([present[m] for m in names], 1)  # [B, M]
    drop = torch.rand(pres.shape, generator=gen) < p
    kept = pres & ~drop
    none_left = ~kept.any(1) & pres.any(1)
    if none_left.any():  # restore one random originally-present modality
        scores = torch.rand(pres.shape, generator=gen) * pres
        choice = scores.argmax(1)
        kept[none_left, choice[none_left]] = True
    return {m: kept[:, i] for i, m in enumerate(names)}


class _NoWriter:
    """TensorBoard stand-in on ranks other than 0."""

    def add_scalar(self, *a, **k) -> None:
        pass

    def add_scalars(self, *a, **k) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class Session:
    """What one training run holds while it trains: set up once, read by fit_epochs() and finish()."""

    cfg: Config
    run: Run
    dd: Dist
    console: Console
    device: torch.device
    resuming: bool
    given: dict = field(default_factory=dict)  # config paths as the user gave them (run.json)
    pre: Any = None
    splits: dict[str, TensorData] = field(default_factory=dict)
    model: Any = None
    net: Any = None  # the model, or its DDP / FSDP wrapper: forward passes go through it
    optimizer: Any = None
    state: dict = field(default_factory=lambda: {"epoch": 0, "global_step": 0, "best": None, "best_epoch": -1,
                                                 "bad_epochs": 0, "stopped": False})
    augment: Any = None
    teacher: Any = None
    loader: Any = None
    masks: dict = field(default_factory=dict)
    tb: Any = None
    loss_args: tuple = ()
    attack: Any = None  # train.adversarial (models/adversarial.py)
    steps_per_epoch: int = 0
    total_steps: int = 0  # the learning-rate schedule's length (plan_schedule)
    warmup: int = 0
    started: float = field(default_factory=time.time)  # train.time_limit counts from here
    frozen_outputs: dict = field(default_factory=dict)  # per cached modality: rows, computed, seconds
    pretraining: bool = False  # self-supervised objectives on the inputs (training/pretrain.py), no targets
    resumable: bool = True  # False: no resume state written (an ensemble's member), the weights at the end
    shared_frozen: Optional[Path] = None  # where the frozen tensors go, shared with other runs (Keeper)
    keeper: Any = None  # what the run writes as it goes (checkpoint.Keeper)
    said: Optional[set] = None  # the data lines already shown, shared by runs on the same data (the recipe's members)

    def log(self, *a, **k) -> None:
        self.console.print(*a, **k)

    def log_data(self, line: str) -> None:
        """A line about the data (windows, cache, skipped rows): once, where runs share `said`."""
        if self.said is None or line not in self.said:
            self.log(line)
        if self.said is not None:
            self.said.add(line)

    @property
    def selects_on_val(self) -> bool:
        return self.cfg.train.selection == "val"


def train(cfg: Optional[Config] = None, df: Optional[pd.DataFrame] = None, run_dir: Optional[Path] = None, *,
          resume: Optional[Path] = None, init: Optional[Path] = None, console: Optional[Console] = None,
          on_epoch: Optional[Callable[[int, float], None]] = None) -> Path:
    """Train a model; returns the run directory. `resume=RUN` continues that run with its own config
    (and device) from its last checkpoint. With `init`, training starts from that run's weights,
    structure (a pruned run's smaller layers) and preprocessing: recovery fine-tuning after
    compression. `on_epoch(epoch, value)` hears the monitored validation value after each epoch's
    checkpoint; an exception it raises (a pruned search trial) ends training there."""
    return trained(cfg, df, run_dir, resume=resume, init=init, console=console, on_epoch=on_epoch).run.path


def trained(cfg: Optional[Config] = None, df: Optional[pd.DataFrame] = None, run_dir: Optional[Path] = None, *,
            resume: Optional[Path] = None, init: Optional[Path] = None, console: Optional[Console] = None,
            on_epoch: Optional[Callable[[int, float], None]] = None, resumable: bool = True,
            shared_frozen: Optional[Path] = None, said: Optional[set] = None) -> Session:
    """`train`, returning the finished session: its run, its preprocessor, its splits (frozen encoders'
    outputs in place) and, on rank 0, the model under the kept weights, so that a caller who goes on
    with them (the recipe's candidate logits) does not load them again from the run directory.
    `resumable=False`: no checkpoints/ (a run nobody will resume), model.safetensors at the end;
    `shared_frozen`: a folder for the frozen tensors, shared with other runs (an ensemble's members);
    `said`: the data lines other runs on the same data showed already (Session.log_data)."""
    s = setup(cfg, df, run_dir, resume=resume, init=init, console=console, resumable=resumable,
              shared_frozen=shared_frozen, said=said)
    try:
        if s.cfg.model.head == "neighbours":  # no epochs: the training rows are stored, k chosen on val
            from mmfit.training.neighbours import fill

            fill(s, lambda: validate(s), lambda: _split_loss(s.model, s.splits["val"], s.cfg, s.loss_args, s.device))
            if on_epoch is not None:
                on_epoch(0, s.state["best"])
        elif s.cfg.model.head in ("convex", "trees"):  # no epochs: fitted in closed form, cross-fitted
            from mmfit.training.crossfit import fit_folds

            fit_folds(s, lambda: validate(s))
            if on_epoch is not None:
                on_epoch(0, s.state["best"])
        else:
            fit_epochs(s, on_epoch)
    finally:
        s.tb.close()
    finish(s)
    return s


# ---------------------------------------------------------------------------- set up


def setup(cfg: Optional[Config], df, run_dir, resume=None, init=None, console=None, resumable=True,
          shared_frozen=None, said=None) -> Session:
    s = _start(cfg, run_dir, resume, console or Console())
    s.resumable, s.shared_frozen, s.said = resumable, shared_frozen, said
    _data(s, df, init)
    _model(s, init)
    _parts(s, df)
    return s


def _start(cfg: Optional[Config], run_dir, resume, console: Console) -> Session:
    """The config (resolved paths; a resumed run's own), the process group and the run directory."""
    given: dict = {}
    if resume is not None:
        run = Run(resume)
        if cfg is not None:
            raise ValueError(f"--resume continues {resume} with its own {CONFIG}; give a config or a run to "
                             "resume, not both")
        if not run.has(CONFIG):
            raise FileNotFoundError(f"--resume: {resume} is not a run directory (no {CONFIG})")
        cfg = run.config()
        given = {k: v["given"] for k, v in run.info().get("paths", {}).items()}
    elif cfg is None:
        raise ValueError("a config is needed (or resume=RUN_DIR)")
    else:
        cfg, given = resolve_paths(cfg)
    dd = Dist.from_env(cfg.train.device, cfg.train.dist_timeout)  # a resumed run keeps its device
    if resume is None:
        run = Run(dd.broadcast(str(run_dir) if run_dir else str(new_run_dir(cfg))))
        if run.has_checkpoint():
            raise FileExistsError(f"{run} already holds a run; use --resume to continue it")
        dd.barrier()  # every rank has looked before rank 0 creates it
        if dd.main:
            run.create()
    tc = cfg.train
    if tc.num_threads:
        torch.set_num_threads(tc.num_threads)
    seed_everything(tc.seed)
    return Session(cfg, run, dd, console if dd.main else Console(quiet=True),  # one voice: rank 0 logs, writes
                   dd.device or torch.device(resolve_device(tc.device)), resuming=resume is not None and run.has_checkpoint(),
                   given=given)


def _data(s: Session, df, init) -> None:
    """Preprocessing fitted on train (or a resumed / initial run's), the splits; a new run records them."""
    t0, dd, cfg = time.time(), s.dd, s.cfg
    fitted = s.run.preprocessor(cfg) if s.resuming else Run(init).preprocessor(cfg) if init else None
    if dd.world > 1:  # every rank decodes its share of the blocks into the cache, then reads them all
        shares = dd.gather(decode_share(cfg, df, dd.rank, dd.world, fitted=fitted))
        s.log("decoding shared by the processes: " + ", ".join(
            f"rank {r} {c['decoded']} file(s) in {c['shards']} shard(s)" for r, c in enumerate(shares))
            + f" ({time.time() - t0:.1f}s)")
    texts = init_texts(encoder_inits(cfg)) if fitted is None else None
    s.pre, s.splits, errors = prepare_training(cfg, df, log=s.log_data, fitted=fitted, texts=texts)
    tr, va, te = (s.splits[k] for k in ("train", "val", "test"))
    s.log(f"data: {len(tr)} train / {len(va)} val / {len(te)} test rows, modalities {s.pre.modalities} "
          f"({time.time() - t0:.1f}s)")
    if s.selects_on_val and not len(va):
        sp = cfg.data.split
        if sp.refit:
            raise ValueError("data.split.refit trains on the val rows too, so there is no validation to select "
                             "the weights on: set train.selection: last (and train.epochs to the count chosen before)")
        raise ValueError(
            "the validation split is empty, so there is nothing to select the weights on or to stop early "
            f"with: give data.split.val > 0 (it is {sp.val}), or rows marked 'val' in the '{sp.column}' column, "
            "or set train.selection: last to keep the last epoch's weights without validation")
    if not s.selects_on_val:
        s.log(f"train.selection: last: no validation; the weights of epoch {cfg.train.epochs} are kept")
    if dd.main and not s.resuming:
        s.run.save_preprocessor(s.pre)
        s.run.save_config(cfg, s.given)
        if errors.errors:
            s.run.write_skipped(errors)


def _model(s: Session, init) -> None:
    """The model (from a resumed checkpoint's or an initial run's structure), wrapped per strategy."""
    cfg, dd, tc = s.cfg, s.dd, s.cfg.train
    seed_everything(tc.seed)
    init_run = Run(init) if init and not s.resuming else None
    if init_run:  # its weights and structure (a pruned run's smaller layers)
        model = build_run_model(init_run, cfg, s.pre)
    else:
        inits = {} if s.resuming else encoder_inits(cfg)  # a resumed run's checkpoint has every weight
        model = build_model(cfg, s.pre, init_states={m: r.encoder_state(m) for m, r in inits.items()})
        for m, r in inits.items():
            s.log(f"{m}: encoder weights from {r}")
    if s.resuming:  # likewise, before the checkpoint is loaded into it
        conform_to_state(model, s.run.checkpoint_weights())
    elif not init_run:
        ids = {m: torch.as_tensor(d["input_ids"][:]).long() for m, d in s.splits["train"].inputs.items()
               if "input_ids" in d}
        for m, (a, b) in trim_vocabularies(model, cfg, s.pre, ids).items():
            s.log(f"{m}: embedding table trimmed to the training data's tokens, {a} -> {b} rows")
    model.to(s.device)
    if dd.main and not s.resuming:
        s.run.save_architectures(model)
    if tc.keep_sparsity and tc.strategy == "fsdp" and dd.world > 1:
        raise ValueError("train.keep_sparsity needs whole weights: use train.strategy ddp for recovery training")
    s.model, s.net = model, dd.wrap(model, tc.strategy)
    s.optimizer = torch.optim.AdamW(param_groups(model, cfg), lr=tc.lr)
    n_params, n_train = count_parameters(model)
    summary = trainable_summary(model)
    if dd.main:
        s.run.save_params(parameter_summary(model))
    s.log(f"model: {n_params / 1e6:.2f}M parameters ({n_train / 1e6:.3f}M trainable, "
          f"{100 * n_train / n_params:.1f}%), fusion={cfg.model.fusion}, device={s.device}"
          + (f", {dd.world} processes ({'FSDP, parameters sharded' if dd.sharded else 'DDP'})" if dd.world > 1 else ""))
    s.log(summary_line(summary))
    _log_input_sizes(s)
    if dd.sharded:
        local = sum(p.to_local().numel() if hasattr(p, "to_local") else p.numel() for p in model.parameters())
        s.log(f"FSDP: rank {dd.rank} holds {local:,} of the {n_params:,} parameters")


def _log_input_sizes(s: Session) -> None:
    """Say so where an image encoder's weights were trained at another size than the data is fed at."""
    for m in s.pre.files:
        info = encoder_info(encoder_config(s.cfg, m).name)
        want = info.input_size if info.pretrained else None
        side, key = s.pre.files[m].side, f"data.{s.pre.files[m].kind}.size"
        if want and side and want != side:
            s.log(f"{m}: its encoder was trained on {want} px images; {key} gives {side}")


def _parts(s: Session, df) -> None:
    """Augmentation, the teacher, the schedule, the loader, logs; a resumed run's state back."""
    cfg, tc, dd, train_data = s.cfg, s.cfg.train, s.dd, s.splits["train"]
    s.keeper = s.run.keeper({n for n, p in s.model.named_parameters() if not p.requires_grad}, s.resumable,
                            s.resuming, s.shared_frozen)
    s.augment = Augmenter.from_preprocessor(cfg.augment, s.pre)
    # pretraining masks the inputs its encoders read: nothing to compute once
    frozen = [] if s.pretraining else cached_modalities(s.model, s.augment.touches, dd.sharded)
    if frozen:
        cache, tokens = FeatureCache(cfg.data.cache_dir), cfg.model.fusion == "attention"
        if dd.world > 1:  # every rank computes its share of the blocks into the cache, then reads them all
            shares = dd.gather(cache_outputs(s.model, s.splits, frozen, cache, cfg.data.shard_rows, tokens,
                                             s.device, share=(dd.rank, dd.world)))
            s.log("frozen encoders shared by the processes: " + ", ".join(
                f"rank {r} {sum(c['computed'] for c in rep.values())} row(s)" for r, rep in enumerate(shares)))
        s.frozen_outputs = cache_outputs(s.model, s.splits, frozen, cache, cfg.data.shard_rows, tokens, s.device,
                                         log=s.log)
    if cfg.distill.teacher:
        s.teacher = Teacher.from_run(Path(cfg.distill.teacher), df, train_data.rows, cfg, log=s.log)
    s.steps_per_epoch = math.ceil(math.ceil(len(train_data) / tc.batch_size) / tc.accumulate)
    plan_schedule(s, tc.epochs)
    task_types = {t: p.loss_kind for t, p in s.pre.targets.items()}
    task_weights = {t: p.cfg.weight for t, p in s.pre.targets.items()}
    s.loss_args = (task_types, task_weights, cfg.loss.task_lambda, cfg.loss.aux_weight, cfg.loss.label_smoothing)
    if cfg.train.adversarial.method != "none" and not s.pretraining:
        from mmfit.config import modality_kinds
        from mmfit.models.adversarial import Attack

        s.attack = Attack(cfg.train.adversarial, modality_kinds(cfg))
        a = s.attack
        s.log(f"adversarial training: {a.method} on {', '.join(a.kinds) or 'nothing'} (epsilon "
              + ", ".join(f"{k} {a.eps[k]:g}" for k in sorted(set(a.kinds.values()))) + f"; weight {a.cfg.weight:g})")
    if s.resuming:
        s.state = s.run.load_checkpoint(s.model, s.optimizer, load=dd.load_state)
        s.log(f"resumed from {s.run / CHECKPOINT} at epoch {s.state['epoch']}")
        plan_schedule(s, s.state.get("planned_epochs", tc.epochs))
        if dd.main:  # lines of epochs the checkpoint does not cover are run again
            s.run.keep_metrics_before(s.state["epoch"])
    s.masks = sparsity_masks(s.model) if tc.keep_sparsity else {}
    if s.masks:
        s.log(f"keeping {sum(int(m.sum()) for m in s.masks.values())} pruned weights at zero")
    from torch.utils.tensorboard import SummaryWriter

    s.tb = SummaryWriter(str(s.run / TB)) if dd.main else _NoWriter()
    workers = tc.loader_workers if tc.loader_workers is not None else (
        min(4, max(1, (os.cpu_count() or 2) // 2)) if s.device.type == "cuda" else 0)  # on CPU the model needs the cores
    pin = tc.pin_memory if tc.pin_memory is not None else s.device.type == "cuda"
    s.loader = Loader(train_data, tc.batch_size, workers, pin, shard=(dd.rank, dd.world))
    if workers or pin:
        s.log(f"data loader: {workers} worker process(es), pinned memory {'on' if pin else 'off'}")


# ---------------------------------------------------------------------------- fit


def fit_epochs(s: Session, on_epoch: Optional[Callable[[int, float], None]] = None) -> None:
    tc = s.cfg.train
    progress = Progress(TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("loss {task.fields[loss]:.4f}  val {task.fields[metric]}"),
                        TimeElapsedColumn(), console=s.console, transient=True, disable=not s.console.is_terminal)
    n_train = len(s.splits["train"])
    with progress:
        metric_text = "-"
        bar = progress.add_task("train", total=n_train, epoch=0, loss=0.0, metric=metric_text)
        last_epoch_s = None
        steady: list[float] = []  # this process's epoch times after its first (which fills caches)
        for epoch in range(s.state["epoch"], tc.epochs):
            if s.state["stopped"]:
                break
            if tc.time_limit and last_epoch_s:
                # rank 0 decides for all: ranks that disagreed would wait on each other
                left = s.dd.broadcast(tc.time_limit - (time.time() - s.started))
                if last_epoch_s > left:
                    s.log(f"time limit: {tc.time_limit:.0f}s would be passed by epoch {epoch + 1} "
                          f"(about {last_epoch_s:.0f}s each); stopping after {epoch} epochs")
                    break
                if steady:
                    each = s.dd.broadcast(float(np.median(steady)))
                    planned = epochs_within(epoch, left, each, tc.epochs)
                    if planned != s.state.get("planned_epochs", tc.epochs):
                        if "planned_epochs" not in s.state:  # later changes show in the epoch lines
                            s.log(f"time limit: the learning rate decays over {planned} epochs, not "
                                  f"{tc.epochs} (about {each:.1f}s each, {left:.0f}s left)")
                        plan_schedule(s, planned)
            t_epoch = time.time()
            # reset() replaces every field, so all of them are given again
            progress.reset(bar, total=n_train, epoch=f"{epoch + 1}/{tc.epochs}", loss=0.0, metric=metric_text)
            train_terms = train_epoch(s, epoch, lambda size, loss: progress.update(bar, advance=size, loss=loss))
            train_s = time.time() - t_epoch
            value, better = end_epoch(s, epoch, train_terms, t_epoch, train_s)
            took = time.time() - t_epoch
            if last_epoch_s is not None:
                steady.append(took)
            last_epoch_s = took
            if value is not None:
                metric_text = f"{monitor_key(s.cfg)[0]}={value:.4f}"
                progress.update(bar, metric=metric_text)
            if on_epoch is not None:
                on_epoch(epoch, value)
            if s.state["stopped"]:
                key = monitor_key(s.cfg)[0]
                s.log(f"early stop: no improvement in {key} for {tc.patience} epochs "
                      f"(best {s.state['best']:.4f} at epoch {s.state['best_epoch'] + 1})")


def train_epoch(s: Session, epoch: int, advance: Callable[[int, float], None]) -> dict[str, float]:
    """One pass over the training split; -> the mean of every loss term (across processes too)."""
    tc, dd, model = s.cfg.train, s.dd, s.model
    gen = torch.Generator().manual_seed(tc.seed * 1_000_003 + epoch)  # the batch order: same on all ranks
    # dropout / augmentation draws: each rank its own (one process: the same generator as before)
    agen = gen if dd.world == 1 else torch.Generator().manual_seed(tc.seed * 1_000_003 + epoch + 7919 * dd.rank)
    model.train()
    sums: dict[str, float] = {}
    n_batches = 0
    batches_per_epoch = math.ceil(len(s.splits["train"]) / tc.batch_size)
    for i, batch in enumerate(s.loader.epoch(shuffle=True, generator=gen)):
        if not s.pretraining:  # pretraining needs every pair of modalities a row has
            batch.present = modality_dropout(batch.present, tc.modality_dropout, agen)
        batch = batch.to(s.device)
        mix = None
        if s.augment.active:
            batch = s.augment(batch, agen)
            mix = None if s.pretraining else s.augment.sample_mix(batch.size, agen)
        with torch.autocast(device_type=s.device.type, dtype=torch.bfloat16, enabled=tc.precision == "bf16"):
            # pretraining: the objectives' terms (their masks drawn from the epoch's generator)
            out = s.net(batch.inputs, batch.present, agen) if s.pretraining else \
                s.net(batch.inputs, batch.present, mix, batch.targets)  # (a generation head reads its text)
        if s.pretraining:
            terms = out
        elif mix is None:
            terms = batch_loss(out, batch, s.loss_args, s.teacher, s.cfg.distill)
        else:  # mixup: the targets mix with the same weight as the inputs
            perm, lam = mix
            batch.present = mixed_presence(batch.present, perm)
            t_a = batch_loss(out, batch, s.loss_args, s.teacher, s.cfg.distill)
            t_b = batch_loss(out, permuted_targets(batch, perm), s.loss_args, s.teacher, s.cfg.distill)
            terms = {k: float(lam) * t_a[k] + (1 - float(lam)) * t_b[k] for k in t_a}
        if s.attack is not None:
            terms = adversarial_backward(s, batch, terms)
        else:
            (terms["total"] / tc.accumulate).backward()
        if (i + 1) % tc.accumulate == 0 or i + 1 == batches_per_epoch:
            step(s)
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
        n_batches += 1
        advance(batch.size, sums["total"] / n_batches)
    return dd.mean({k: v / max(1, n_batches) for k, v in sums.items()})


def adversarial_backward(s: Session, batch, terms: dict) -> dict:
    """Backpropagates (1 - w) L_clean + w L_adv (models/adversarial.py). The attack itself runs
    through the plain model and reads gradients of the perturbations only; the passes whose loss
    trains go through `s.net` (each forward followed by its backward, as DDP needs)."""
    tc, a = s.cfg.train, s.attack
    w = a.cfg.weight
    loss_fn = lambda out: batch_loss(out, batch, s.loss_args, s.teacher, s.cfg.distill)["total"]  # noqa: E731
    ((1 - w) * terms["total"] / tc.accumulate).backward()
    with torch.autocast(device_type=s.device.type, dtype=torch.bfloat16, enabled=tc.precision == "bf16"):
        if a.method == "freelb":
            adv = torch.stack(a.free_steps(s.model, batch, loss_fn, w / tc.accumulate, net=s.net)).mean()
        else:
            deltas = a.perturb(s.model, batch, loss_fn)
            with a.applied(s.model, batch.inputs, dict(deltas)) as inputs:
                adv = loss_fn(s.net(inputs, batch.present, None, batch.targets))
            (w * adv / tc.accumulate).backward()
    out = {k: v.detach() for k, v in terms.items()}
    out["adversarial"] = adv.detach()
    out["total"] = (1 - w) * out["total"] + w * out["adversarial"]
    return out


def step(s: Session) -> None:
    """One optimiser step: clip, schedule, step, zero, re-apply sparsity masks."""
    tc = s.cfg.train
    if tc.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(s.model.parameters(), tc.grad_clip)
    f = lr_factor(s.state["global_step"], s.total_steps, s.warmup)
    for g in s.optimizer.param_groups:
        g["lr"] = g["base_lr"] * f
    s.optimizer.step()
    s.optimizer.zero_grad(set_to_none=True)
    if s.masks:
        apply_masks(s.model, s.masks)
    s.state["global_step"] += 1


def end_epoch(s: Session, epoch: int, train_terms: dict, t_epoch: float, train_s: float) -> tuple:
    """Validate, keep the weights if they are the best (or, with selection 'last', always), write the
    checkpoint and the epoch's record. -> (monitored value or None, whether the weights were kept)."""
    tc, dd, state = s.cfg.train, s.dd, s.state
    key, mode = monitor_key(s.cfg)
    flat, value, better = {}, None, True
    if s.selects_on_val:
        flat = validate(s)
        if key not in flat:
            raise KeyError(f"train.monitor: '{key}' is not a validation metric (have: {', '.join(flat)})")
        value, loss = dd.broadcast((flat[key], flat["loss"]))  # decided once, on rank 0, for every rank
        # a tie on the monitored value (a coarse one, such as macro-F1 on a few validation rows) goes
        # to the lower validation loss: the earliest of equal epochs is often the least trained
        better = state["best"] is None or (
            value > state["best"] + tc.min_delta if mode == "max" else value < state["best"] - tc.min_delta) or (
            value == state["best"] and loss < state.get("best_loss", float("inf")))
        if better:
            state["best_loss"] = loss
    # full weights (and optimiser state), gathered once: every rank takes part when sharded
    weights, opt_state = dd.model_state(s.model), dd.optimizer_state(s.model, s.optimizer)
    if better:
        state.update(best=value, best_epoch=epoch, bad_epochs=0)
    else:
        state["bad_epochs"] += 1
    state["epoch"] = epoch + 1
    if s.selects_on_val and state["bad_epochs"] >= tc.patience:
        state["stopped"] = True
    lr_now = s.optimizer.param_groups[0]["lr"]
    record = {"epoch": epoch, "step": state["global_step"], "lr": lr_now, "time_s": time.time() - t_epoch,
              "train_s": train_s, "samples_per_s": len(s.splits["train"]) / max(train_s, 1e-9),  # all ranks
              "train": train_terms, "val": flat, "monitor": key if s.selects_on_val else None, "best": state["best"]}
    if "planned_epochs" in state:  # the schedule's length under train.time_limit
        record["planned_epochs"] = state["planned_epochs"]
    if s.frozen_outputs and epoch == 0:  # what the one pass of the frozen encoders cost, before epoch 1
        record["frozen_outputs"] = s.frozen_outputs
    if dd.main:
        s.keeper.epoch(weights, opt_state, state, better, epoch)
        s.run.append_metrics(record)
    for k, v in train_terms.items():
        s.tb.add_scalar(f"train/{k}", v, epoch)
    for k, v in flat.items():
        s.tb.add_scalar(f"val/{k}", v, epoch)
    s.tb.add_scalar("lr", lr_now, epoch)
    if s.selects_on_val:  # one chart with both losses (they part where the model starts to memorise)
        s.tb.add_scalars("loss", {"train": train_terms["total"], "val": flat["loss"]}, epoch)
        s.tb.add_scalar(f"monitor/{key}", value, epoch)
    shown = f"val loss {flat['loss']:.3f} " + (f"{key} {value:.4f} " if key != "loss" else "") if s.selects_on_val else ""
    s.log(f"epoch {epoch + 1:>3}/{state.get('planned_epochs', tc.epochs)} loss {train_terms['total']:.3f} {shown}"
          f"{time.time() - t_epoch:.1f}s{' *' if better else ''}")
    return value, better


def validate(s: Session) -> dict[str, float]:
    """Every validation metric of the current weights (flat: 'task/metric'), and the loss (pretraining:
    each objective's term and their total, the loss)."""
    tc, data = s.cfg.train, s.splits["val"]
    if s.pretraining:
        return pretrain_losses(s.model, data, tc.batch_size * 2, s.device, tc.seed)
    val_metrics = metrics_from_predictions(
        predict_data(s.model, data, s.pre, tc.batch_size * 2, s.device, precision=tc.precision), s.pre)
    flat = {f"{t}/{k}": v for t, ms in val_metrics.items() for k, v in ms.items() if k != "n"}
    flat["loss"] = _split_loss(s.model, data, s.cfg, s.loss_args, s.device)
    return flat


# ---------------------------------------------------------------------------- finish


def finish(s: Session) -> Path:
    """Evaluate the kept weights on val and test (rank 0; the others are done)."""
    dd, tc = s.dd, s.cfg.train
    dd.barrier()
    if not dd.main:
        dd.close()
        return s.run.path
    s.keeper.publish()  # model.safetensors: the whole model under the kept weights
    model = s.model
    if s.pretraining and dd.sharded:  # its weights are written; the terms were logged each epoch
        dd.close()
        return s.run.path
    if dd.sharded:  # rank 0 evaluates alone: an unsharded copy, as `mmfit predict` builds it
        model = s.model = build_run_model(s.run, s.cfg, s.pre).to(s.device)
    else:
        load_weights(model, s.run)
    if s.pretraining:  # no task to evaluate: the objectives' terms of the kept weights
        for name in ("val", "test"):
            if len(s.splits[name]):
                losses = pretrain_losses(model, s.splits[name], tc.batch_size * 2, s.device, tc.seed)
                s.run.write_evaluation(name, {"pretrain": losses, "split": name, "run": str(s.run),
                                              "best_epoch": s.state["best_epoch"]})
        dd.close()
        return s.run.path
    if any(has_adapters(e) for e in model.encoders.values()):
        s.log(f"adapters saved for {', '.join(s.run.save_adapters(adapter_states(model)))} in {s.run / 'adapters'}")
    for name in ("val", "test"):
        data = s.splits[name]
        if len(data):
            res = evaluate_data(model, data, s.pre, tc.batch_size * 2, s.device, ablation=name == "test",
                                precision=tc.precision)
            res.update(split=name, run=str(s.run), best_epoch=s.state["best_epoch"], selection=tc.selection)
            if name == "val" and s.state.get("val_note"):
                res["note"] = s.state["val_note"]
            s.run.write_evaluation(name, res)
    dd.close()
    return s.run.path


def batch_loss(out, batch, loss_args, teacher, kd) -> dict:
    """The multi-task objective, plus the distillation terms when a teacher is set."""
    terms = total_loss(out, batch, *loss_args)
    if teacher is None:
        return terms
    return combine(terms, teacher.terms(out, batch.rows, kd), kd)


@torch.no_grad()
def _split_loss(model, data, cfg, loss_args, device) -> float:
    model.eval()
    task_types, task_weights = loss_args[:2]
    total, n = 0.0, 0
    for batch in data.batches(cfg.train.batch_size * 2):
        batch = batch.to(device)
        out = model(batch.inputs, batch.present, targets=batch.targets)
        terms = total_loss(out, batch, task_types, task_weights, cfg.loss.task_lambda, cfg.loss.aux_weight)
        total += float(terms["total"]) * batch.size
        n += batch.size
    return total / max(1, n)

