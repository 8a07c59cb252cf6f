"""The fit loop, top to bottom: data -> model -> optimiser -> epochs -> best checkpoint -> test.

Features are visible `if` branches here, not callbacks: accumulation, clipping, bf16,
modality dropout, early stopping, atomic checkpoints, resume, TensorBoard and metrics.jsonl.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from datetime import datetime
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from safetensors.torch import load_file

from mmfit.config import Config, encoder_config, load_config
from mmfit.data.augment import Augmenter, mixed_presence, permuted_targets
from mmfit.data.batch import Loader
from mmfit.data.prepare import Preprocessor, prepare_training
from mmfit.models.model import build_model, save_architectures, trim_vocabularies
from mmfit.optimize.distill import Teacher, combine
from mmfit.optimize.prune import apply_masks, conform_to_state, sparsity_masks
from mmfit.optimize.quantize import load_state
from mmfit.training import checkpoint as ckpt
from mmfit.training.evaluate import evaluate_data, metrics_from_predictions, predict_data
from mmfit.training.finetune import (count_parameters, has_adapters, layer_lr_scales, save_adapters,
                                     summary_line, trainable_summary)
from mmfit.training.losses import total_loss
from mmfit.training.distributed import Dist
from mmfit.training.metrics import default_metric


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def monitor_key(cfg: Config) -> tuple[str, str]:
    """-> (key, mode): e.g. ('diagnosis/macro_f1', 'max') or ('loss', 'min')."""
    if cfg.train.monitor:
        k = cfg.train.monitor
        return k, "min" if k == "loss" or k.endswith(("/rmse", "/mae")) else "max"
    task, tc = next(iter(cfg.data.targets.items()))
    return f"{task}/{default_metric(tc.type)}", "max"


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
        pretrained = getattr(enc, "pretrained", False)
        # the small rate protects pretrained weights; adapters and BitFit's biases are what should
        # move, so they default to the new-layer rate
        small = pretrained and ec.finetune.strategy not in ("lora", "ia3", "bitfit")
        lr = ec.lr or (cfg.train.pretrained_lr if small else cfg.train.lr)
        decay = ec.finetune.layer_decay
        scales = layer_lr_scales(enc, decay) if pretrained and decay < 1 else {}
        for name, p in enc.named_parameters():
            add(p, lr * scales.get(name, 1.0))
    enc_ids = {id(p) for p in model.encoders.parameters()}
    for p in model.parameters():
        if id(p) not in enc_ids:
            add(p, cfg.train.lr)
    return [{"params": ps, "lr": lr, "base_lr": lr, "weight_decay": w} for (lr, w), ps in groups.items()]


def lr_factor(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


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

    def close(self) -> None:
        pass


def new_run_dir(cfg: Config) -> Path:
    name = cfg.train.run_name or datetime.now().strftime("run-%Y%m%d-%H%M%S")
    base = Path(cfg.train.output_dir) / name
    path, k = base, 1
    while path.exists():
        k += 1
        path = Path(f"{base}-{k}")
    return path


def train(cfg: Config, df: Optional[pd.DataFrame] = None, run_dir: Optional[Path] = None,
          resume: bool = False, console: Optional[Console] = None, init: Optional[Path] = None,
          on_epoch: Optional[Callable[[int, float], None]] = None) -> Path:
    """Train a model; returns the run directory. With resume=True, `run_dir` is continued.
    With `init`, training starts from that run's weights, structure (a pruned run's smaller
    layers) and preprocessing: recovery fine-tuning after compression. `on_epoch(epoch, value)`
    hears the monitored validation value after each epoch's checkpoint; an exception it raises
    (a pruned search trial) ends training there."""
    console = console or Console()
    dd = Dist.from_env(cfg.train.device if cfg is not None else "auto")
    if not dd.main:  # one voice: rank 0 logs and writes
        console = Console(quiet=True)
    log = console.print
    if resume:
        if run_dir is None or not (Path(run_dir) / "config.yaml").exists():
            raise FileNotFoundError(f"--resume: {run_dir} is not a run directory (no config.yaml)")
        run_dir = Path(run_dir)
        cfg = load_config(run_dir / "config.yaml")
    else:
        run_dir = Path(dd.broadcast(str(run_dir) if run_dir else str(new_run_dir(cfg))))
        if (run_dir / "checkpoints" / "last.safetensors").exists():
            raise FileExistsError(f"{run_dir} already holds a run; use --resume to continue it")
        dd.barrier()  # every rank has looked before rank 0 creates it
        if dd.main:
            run_dir.mkdir(parents=True, exist_ok=True)
    tc = cfg.train
    if tc.num_threads:
        torch.set_num_threads(tc.num_threads)
    seed_everything(tc.seed)
    device = dd.device or resolve_device(tc.device)
    last_ckpt = run_dir / "checkpoints" / "last.safetensors"
    resuming = resume and last_ckpt.exists()

    # ---- data
    t0 = time.time()
    fitted = Preprocessor.load(cfg, run_dir) if resuming else Preprocessor.load(cfg, init) if init else None
    if not dd.main:
        dd.barrier()  # rank 0 decodes first and fills the cache; the others then read it
    pre, splits, errors = prepare_training(cfg, df, run_dir if dd.main else None, log=log, fitted=fitted)
    if dd.main:
        dd.barrier()
    train_data, val_data, test_data = splits["train"], splits["val"], splits["test"]
    log(f"data: {len(train_data)} train / {len(val_data)} val / {len(test_data)} test rows, "
        f"modalities {pre.modalities} ({time.time() - t0:.1f}s)")
    if not resuming and dd.main:
        pre.save(run_dir)
        (run_dir / "config.yaml").write_text(cfg.to_yaml())
        if errors.errors:
            (run_dir / "skipped.json").write_text(json.dumps({"rows": len(errors.bad_rows()),
                                                              "reasons": len(errors.errors)}))

    # ---- model and optimiser
    seed_everything(tc.seed)
    model = build_model(cfg, pre, run_dir=init if init and not resuming else None)
    if resuming or init:  # a pruned model has smaller layers than the config builds
        state = load_file(str(last_ckpt if resuming else init / "model.safetensors"))
        if resuming:
            state = {k[6:]: v for k, v in state.items() if k.startswith("model.")}
        conform_to_state(model, state)
        if not resuming:
            load_state(model, state)
    if not resuming and not init:
        for m, (a, b) in trim_vocabularies(model, cfg, pre, {m: torch.as_tensor(d["input_ids"][:]).long()
                                                             for m, d in train_data.inputs.items()
                                                             if "input_ids" in d}).items():
            log(f"{m}: embedding table trimmed to the training data's tokens, {a} -> {b} rows")
    model.to(device)
    if not resuming and dd.main:
        save_architectures(model, run_dir)
    if tc.keep_sparsity and tc.strategy == "fsdp" and dd.world > 1:
        raise ValueError("train.keep_sparsity needs whole weights: use train.strategy ddp for recovery training")
    net = dd.wrap(model, tc.strategy)  # DDP (or FSDP shards) with several processes; forward goes through it
    optimizer = torch.optim.AdamW(param_groups(model, cfg), lr=tc.lr)
    n_params, n_train = count_parameters(model)
    summary = trainable_summary(model)
    if dd.main:
        (run_dir / "params.json").write_text(json.dumps({"params": n_params, "trainable": n_train, **summary},
                                                        indent=2))
    log(f"model: {n_params / 1e6:.2f}M parameters ({n_train / 1e6:.3f}M trainable, "
        f"{100 * n_train / n_params:.1f}%), fusion={cfg.model.fusion}, device={device}"
        + (f", {dd.world} processes ({'FSDP, parameters sharded' if dd.sharded else 'DDP'})" if dd.world > 1 else ""))
    log(summary_line(summary))
    if dd.sharded:
        local = sum(p.to_local().numel() if hasattr(p, "to_local") else p.numel() for p in model.parameters())
        log(f"FSDP: rank {dd.rank} holds {local:,} of the {n_params:,} parameters")
    augment = Augmenter.from_preprocessor(cfg.augment, pre)
    teacher = None
    if cfg.distill.teacher:
        teacher = Teacher.from_run(Path(cfg.distill.teacher), df, train_data.rows, cfg, log=log)
    batches_per_epoch = math.ceil(len(train_data) / tc.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / tc.accumulate)
    total_steps = steps_per_epoch * tc.epochs
    warmup = int(tc.warmup_ratio * total_steps)
    key, mode = monitor_key(cfg)
    task_types = {t: p.type for t, p in pre.targets.items()}
    task_weights = {t: p.cfg.weight for t, p in pre.targets.items()}
    loss_args = (task_types, task_weights, cfg.loss.task_lambda, cfg.loss.aux_weight, cfg.loss.label_smoothing)

    state = {"epoch": 0, "global_step": 0, "best": None, "best_epoch": -1, "bad_epochs": 0, "stopped": False}
    metrics_path = run_dir / "metrics.jsonl"
    if resuming:
        state = ckpt.load_training(last_ckpt, model, optimizer, load=dd.load_state)
        log(f"resumed from {last_ckpt} at epoch {state['epoch']}")
    masks = sparsity_masks(model) if tc.keep_sparsity else {}
    if masks:
        log(f"keeping {sum(int(m.sum()) for m in masks.values())} pruned weights at zero")
        if metrics_path.exists() and dd.main:  # drop lines of epochs that the checkpoint does not cover
            keep = [ln for ln in metrics_path.read_text().splitlines()
                    if ln.strip() and json.loads(ln)["epoch"] < state["epoch"]]
            metrics_path.write_text("".join(ln + "\n" for ln in keep))
    from torch.utils.tensorboard import SummaryWriter

    tb = SummaryWriter(str(run_dir / "tb")) if dd.main else _NoWriter()
    amp = dict(device_type=device.type, dtype=torch.bfloat16, enabled=tc.precision == "bf16")

    workers = tc.loader_workers if tc.loader_workers is not None else (
        min(4, max(1, (os.cpu_count() or 2) // 2)) if device.type == "cuda" else 0)  # on CPU the model needs the cores
    pin = tc.pin_memory if tc.pin_memory is not None else device.type == "cuda"
    loader = Loader(train_data, tc.batch_size, workers, pin, shard=(dd.rank, dd.world))
    if workers or pin:
        log(f"data loader: {workers} worker process(es), pinned memory {'on' if pin else 'off'}")

    # ---- epochs
    progress = Progress(TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("loss {task.fields[loss]:.4f}  val {task.fields[metric]}"),
                        TimeElapsedColumn(), console=console, transient=True, disable=not console.is_terminal)
    with progress:
        metric_text = "-"
        bar = progress.add_task("train", total=len(train_data), epoch=0, loss=0.0, metric=metric_text)
        for epoch in range(state["epoch"], tc.epochs):
            if state["stopped"]:
                break
            t_epoch = time.time()
            gen = torch.Generator().manual_seed(tc.seed * 1_000_003 + epoch)  # the batch order: same on all ranks
            # dropout / augmentation draws: each rank its own (one process: the same generator as before)
            agen = gen if dd.world == 1 else torch.Generator().manual_seed(tc.seed * 1_000_003 + epoch + 7919 * dd.rank)
            model.train()
            sums: dict[str, float] = {}
            n_batches = 0
            # reset() replaces every field, so all of them are given again
            progress.reset(bar, total=len(train_data), epoch=f"{epoch + 1}/{tc.epochs}", loss=0.0,
                           metric=metric_text)
            for i, batch in enumerate(loader.epoch(shuffle=True, generator=gen)):
                batch.present = modality_dropout(batch.present, tc.modality_dropout, agen)
                batch = batch.to(device)
                mix = None
                if augment.active:
                    batch = augment(batch, agen)
                    mix = augment.sample_mix(batch.size, agen)
                with torch.autocast(**amp):
                    out = net(batch.inputs, batch.present, mix)
                if mix is None:
                    terms = batch_loss(out, batch, loss_args, teacher, cfg.distill)
                else:  # mixup: the targets mix with the same weight as the inputs
                    perm, lam = mix
                    batch.present = mixed_presence(batch.present, perm)
                    t_a = batch_loss(out, batch, loss_args, teacher, cfg.distill)
                    t_b = batch_loss(out, permuted_targets(batch, perm), loss_args, teacher, cfg.distill)
                    terms = {k: float(lam) * t_a[k] + (1 - float(lam)) * t_b[k] for k in t_a}
                (terms["total"] / tc.accumulate).backward()
                if (i + 1) % tc.accumulate == 0 or i + 1 == batches_per_epoch:
                    if tc.grad_clip > 0:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
                    f = lr_factor(state["global_step"], total_steps, warmup)
                    for g in optimizer.param_groups:
                        g["lr"] = g["base_lr"] * f
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    if masks:
                        apply_masks(model, masks)
                    state["global_step"] += 1
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                n_batches += 1
                progress.update(bar, advance=batch.size, loss=sums["total"] / n_batches)

            train_s = time.time() - t_epoch
            # ---- validation
            train_terms = dd.mean({k: v / max(1, n_batches) for k, v in sums.items()})
            eval_data = val_data if len(val_data) else train_data
            val_metrics = metrics_from_predictions(
                predict_data(model, eval_data, pre, tc.batch_size * 2, device, precision=tc.precision), pre)
            val_loss = _split_loss(model, eval_data, cfg, task_types, task_weights, device)
            flat = {f"{t}/{k}": v for t, ms in val_metrics.items() for k, v in ms.items() if k != "n"}
            flat["loss"] = val_loss
            if key not in flat:
                raise KeyError(f"train.monitor: '{key}' is not a validation metric (have: {', '.join(flat)})")
            value = dd.broadcast(flat[key])  # decided once, on rank 0, for every rank
            better = state["best"] is None or (
                value > state["best"] + tc.min_delta if mode == "max" else value < state["best"] - tc.min_delta)
            # full weights (and optimiser state), gathered once: every rank takes part when sharded
            weights, opt_state = dd.model_state(model), dd.optimizer_state(model, optimizer)
            if better:
                state.update(best=value, best_epoch=epoch, bad_epochs=0)
                if dd.main:
                    ckpt.save_weights(weights, run_dir / "model.safetensors", {"epoch": str(epoch)})
            else:
                state["bad_epochs"] += 1
            state["epoch"] = epoch + 1
            if state["bad_epochs"] >= tc.patience:
                state["stopped"] = True
            lr_now = optimizer.param_groups[0]["lr"]
            record = {"epoch": epoch, "step": state["global_step"], "lr": lr_now, "time_s": time.time() - t_epoch,
                      "train_s": train_s, "samples_per_s": len(train_data) / max(train_s, 1e-9),  # all ranks together
                      "train": train_terms, "val": flat, "monitor": key, "best": state["best"]}
            if dd.main:
                ckpt.save_training(last_ckpt, weights, opt_state, state)
                with open(metrics_path, "a") as fh:
                    fh.write(json.dumps(record) + "\n")
            for k, v in train_terms.items():
                tb.add_scalar(f"train/{k}", v, epoch)
            for k, v in flat.items():
                tb.add_scalar(f"val/{k}", v, epoch)
            tb.add_scalar("lr", lr_now, epoch)
            metric_text = f"{key}={value:.4f}"
            progress.update(bar, metric=metric_text)
            log(f"epoch {epoch + 1:>3}/{tc.epochs} loss {train_terms['total']:.3f} val loss {val_loss:.3f} "
                f"{key} {value:.4f} {time.time() - t_epoch:.1f}s{' *' if better else ''}")
            if on_epoch is not None:
                try:
                    on_epoch(epoch, value)
                except BaseException:
                    tb.close()
                    raise
            if state["stopped"]:
                log(f"early stop: no improvement in {key} for {tc.patience} epochs "
                    f"(best {state['best']:.4f} at epoch {state['best_epoch'] + 1})")
    tb.close()

    # ---- final evaluation of the best weights (rank 0; the others are done)
    dd.barrier()
    if not dd.main:
        dd.close()
        return run_dir
    if dd.sharded:  # rank 0 evaluates alone: an unsharded copy, as `mmfit predict` builds it
        from mmfit.deploy.predictor import model_from_run

        model = model_from_run(cfg, pre, run_dir).to(device)
    else:
        ckpt.load_weights(model, run_dir / "model.safetensors")
    if any(has_adapters(e) for e in model.encoders.values()):
        log(f"adapters saved for {', '.join(save_adapters(model, run_dir))} in {run_dir / 'adapters'}")
    (run_dir / "eval").mkdir(exist_ok=True)
    for name, data in (("val", val_data), ("test", test_data)):
        if len(data):
            res = evaluate_data(model, data, pre, tc.batch_size * 2, device, ablation=name == "test",
                                precision=tc.precision)
            res.update(split=name, run=str(run_dir), best_epoch=state["best_epoch"])
            (run_dir / "eval" / f"{name}.json").write_text(json.dumps(res, indent=2))
    dd.close()
    return run_dir


def batch_loss(out, batch, loss_args, teacher, kd) -> dict:
    """The multi-task objective, plus the distillation terms when a teacher is set."""
    terms = total_loss(out, batch, *loss_args)
    if teacher is None:
        return terms
    return combine(terms, teacher.terms(out, batch.rows, kd), kd)


@torch.no_grad()
def _split_loss(model, data, cfg, task_types, task_weights, device) -> float:
    model.eval()
    total, n = 0.0, 0
    for batch in data.batches(cfg.train.batch_size * 2):
        batch = batch.to(device)
        out = model(batch.inputs, batch.present)
        terms = total_loss(out, batch, task_types, task_weights, cfg.loss.task_lambda, cfg.loss.aux_weight)
        total += float(terms["total"]) * batch.size
        n += batch.size
    return total / max(1, n)
