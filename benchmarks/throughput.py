"""Training throughput: `mmfit train` against a bare PyTorch loop on the same model and the same
in-memory tensors, and the data pipeline's own rate, in one run.

    python benchmarks/throughput.py [--patients 1500] [--epochs 6] [--threads 2] [--rounds 3]

1. `mmfit train` with the demo config (modality dropout, auxiliary losses, grad clipping, LR
   schedule, progress, checkpoints): samples/s of the training part of each epoch, from the
   run's metrics.jsonl (`samples_per_s`; validation excluded).
2. A bare loop a user would write: the same model (built from the same config and fitted
   preprocessing), the same training rows as tensors already in memory (data.in_memory), the same batch size and
   shuffling, AdamW, cross-entropy + MSE, backward, step. Nothing else.
3. The data pipeline alone: the cached features gathered into batches (uint8 images and float16
   log-mels turned into float tensors) with no model: samples/s, from the mapped cache shards
   that `mmfit train` reads, and from memory.
1 and 2 alternate (with a third, `mmfit train` with 2 loader workers) for --rounds rounds, so
a slow spell of the machine hits them alike. Epoch 1 of each run is a warm-up; medians of the
rest. Ratios are from this one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine  # noqa: E402

import mmfit  # noqa: E402
from mmfit import api  # noqa: E402
from mmfit.config import load_config  # noqa: E402
from mmfit.data.demo import generate  # noqa: E402
from mmfit.data.prepare import prepare_training  # noqa: E402
from mmfit.models.model import build_model  # noqa: E402


def bare_loop(cfg, pre, train, epochs: int) -> list[float]:
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg, pre)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    rates = []
    for epoch in range(epochs):
        gen = torch.Generator().manual_seed(epoch)
        model.train()
        t0 = time.perf_counter()
        for batch in train.batches(cfg.train.batch_size, shuffle=True, generator=gen):
            out = model(batch.inputs, batch.present)
            loss = 0.0
            for t, logits in out.logits.items():
                m = batch.target_mask[t]
                if not m.any():
                    continue
                if pre.targets[t].type == "classification":
                    loss = loss + torch.nn.functional.cross_entropy(logits[m], batch.targets[t][m].long())
                else:
                    loss = loss + torch.nn.functional.mse_loss(logits[m][:, 0], batch.targets[t][m].float())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        rates.append(len(train) / (time.perf_counter() - t0))
    return rates


def pipeline(cfg, train, epochs: int) -> list[float]:
    rates = []
    for epoch in range(epochs):
        gen = torch.Generator().manual_seed(epoch)
        t0 = time.perf_counter()
        n = 0
        for batch in train.batches(cfg.train.batch_size, shuffle=True, generator=gen):
            n += batch.size
        rates.append(n / (time.perf_counter() - t0))
    return rates


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("/tmp/mmfit-bench/throughput"))
    ap.add_argument("--patients", type=int, default=1500)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    console = Console(width=140)
    args.out.mkdir(parents=True, exist_ok=True)
    manifest = generate(args.out / "data", n=args.patients)
    over = [f"data.manifest={manifest}", f"data.cache_dir={args.out / 'cache'}", f"train.epochs={args.epochs}",
            f"train.output_dir={args.out / 'runs'}", f"train.num_threads={args.threads}",
            f"train.patience={args.epochs + 1}"]
    cfg = load_config(api.packaged_config("demo"), over)
    prepare_training(cfg, log=lambda *a: None)  # fill the feature cache first: every part reads it
    mem_cfg = load_config(api.packaged_config("demo"), over + ["data.in_memory=true"])
    pre, splits, _ = prepare_training(mem_cfg, log=lambda *a: None)
    train = splits["train"]  # every feature loaded into RAM as tensors
    wcfg = load_config(api.packaged_config("demo"), over + ["train.loader_workers=2"])

    def rates(c):
        run = mmfit.train(c, console=Console(quiet=True))
        return [json.loads(x)["samples_per_s"] for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]

    # the three alternate, round after round, so a slow spell of the machine hits them alike;
    # the first epoch of every run is a warm-up and left out
    ours, bare, with_workers = [], [], []
    for r in range(args.rounds):
        o = rates(cfg)
        b = bare_loop(cfg, pre, train, args.epochs)
        w = rates(wcfg)  # batches assembled by 2 DataLoader worker processes (the default on CPU: none)
        console.print(f"round {r + 1}: mmfit train {[round(x, 1) for x in o]}, bare loop {[round(x, 1) for x in b]}, "
                      f"mmfit train with 2 loader workers {[round(x, 1) for x in w]} samples/s")
        ours += o[1:]
        bare += b[1:]
        with_workers += w[1:]
    _, mapped_splits, _ = prepare_training(cfg, log=lambda *a: None)  # what mmfit train reads: mapped shards
    data = pipeline(cfg, mapped_splits["train"], args.epochs)[1:]
    console.print(f"data only (mapped shards): {[round(r, 1) for r in data]} samples/s")
    data_mem = pipeline(cfg, train, args.epochs)[1:]
    console.print(f"data only (in memory):     {[round(r, 1) for r in data_mem]} samples/s")
    med = statistics.median
    o, b, d, dm, w = med(ours), med(bare), med(data), med(data_mem), med(with_workers)
    table = Table(title=f"training throughput, demo model, {len(train)} training rows, batch "
                        f"{cfg.train.batch_size}, {args.threads} threads")
    for c in ("what", f"samples/s (median of epochs 2+ of {args.rounds} rounds)", "ratio"):
        table.add_column(c, justify="left" if c == "what" else "right")
    table.add_row("mmfit train (training part of each epoch)", f"{o:.1f}", f"{o / b:.2f}x the bare loop")
    table.add_row("mmfit train with train.loader_workers=2", f"{w:.1f}", f"{w / b:.2f}x")
    table.add_row("bare PyTorch loop, same model, tensors in memory", f"{b:.1f}", "1.00x")
    table.add_row("data pipeline alone, mapped cache shards -> batches (mmfit train's)", f"{d:.0f}",
                  f"{d / o:.1f}x what training consumes")
    table.add_row("data pipeline alone, features in memory -> batches", f"{dm:.0f}", f"{dm / o:.1f}x")
    console.print(table)
    console.print(f"machine: {machine()}")
    (args.out / "results.json").write_text(json.dumps({"mmfit": ours, "bare": bare, "data": data, "data_memory": data_mem, "mmfit_2_workers": with_workers,
                                                       "ratio": o / b, "data_over_train": d / o}, indent=2))


if __name__ == "__main__":
    main()
