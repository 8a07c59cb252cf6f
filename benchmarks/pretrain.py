"""Does self-supervised pretraining on the user's own rows pay off when labels are few?

    python benchmarks/pretrain.py ../shared/data [--datasets avdigits,emoji,demo] [--seeds 0,1,2]
        [--fraction 0.1] [--out /tmp/mmfit-bench/pretrain]

Per data set, one model config with from-scratch encoders (the case pretraining is for: data far
from what packaged weights saw: handwriting, spectrograms, scans, and small vocabularies), and a
fixed split (AV-digits by speaker; emoji and the demo 70/15/15 stratified with seed 0):
- pretrain (`mmfit pretrain`, default objectives: masked language modelling, masked patch
  modelling, cross-modal contrastive) on every row outside the test split, labels hidden, 10 % of
  those rows held out to stop on their pretraining loss; one pretraining per seed;
- fine-tune with a fraction of the labels: a seeded stratified sample of the train and of the val
  rows (the same sample for both arms), test rows all;
- (A) the model from its usual start (random weights) against (B) the same model, same settings,
  every encoder started from the pretraining run (`model.encoders.<m>.init`).
Protocol fixed before any test score was seen: pretraining 40 epochs at most (patience 5, batch
64, lr 1e-3); fine-tuning 60 epochs at most (patience 12), lr 1e-3, selection on validation
macro-F1. Prints test macro-F1 per seed, mean +- sd of both arms and of the paired difference,
and writes results.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, mean_sd  # noqa: E402

import mmfit  # noqa: E402

TARGETS = {"emoji": "group", "avdigits": "digit", "demo": "diagnosis"}


def manifest(name: str, data: Path, out: Path) -> pd.DataFrame:
    """benchmarks/probe.py's manifest (inputs, target, absolute paths) with a fixed split column:
    AV-digits' by speaker, else 70/15/15 stratified by the target with seed 0."""
    import probe

    path = probe.manifest(name, data, out)
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "split" not in df.columns:
        rng = np.random.default_rng(0)
        split = np.empty(len(df), object)
        for _, idx in df.groupby(TARGETS[name]).indices.items():
            idx = rng.permutation(idx)
            n_test, n_val = round(0.15 * len(idx)), round(0.15 * len(idx))
            split[idx[:n_test]], split[idx[n_test:n_test + n_val]], split[idx[n_test + n_val:]] = "test", "val", "train"
        df["split"] = split
        df.to_csv(path, index=False)
    return df


def model_config(name: str) -> dict:
    """The data and model sections of each data set's from-scratch model."""
    enc = lambda **k: {"name": "scratch", **k}  # noqa: E731
    if name == "avdigits":
        data = {"columns": {"image": "image", "audio": "audio"},
                "image": {"size": 28, "fit": "squash"},
                "audio": {"sample_rate": 8000, "seconds": 1.0, "n_mels": 40, "n_fft": 256, "hop_length": 80}}
        model = {"dim": 96, "encoders": {"image": enc(layers=1, patch=4), "audio": enc(layers=2, patch=8)}}
    elif name == "emoji":
        data = {"columns": {"image": "image", "text": "text"}, "image": {"size": 64, "fit": "pad"},
                "text": {"max_length": 16, "vocab_size": 3000}}
        model = {"dim": 96, "encoders": {"image": enc(layers=1, patch=8), "text": enc(layers=2)}}
    else:
        data = {"columns": {"scan": "image", "report": "text", "voice_note": "audio", "age": "numeric",
                            "smoker": "categorical"},
                "image": {"size": 64}, "text": {"max_length": 48, "vocab_size": 2000},
                "audio": {"sample_rate": 8000, "seconds": 2.0, "n_mels": 40, "n_fft": 256, "hop_length": 160}}
        model = {"dim": 96, "encoders": {k: enc(layers=1, patch=8) for k in ("image", "audio", "tabular")}
                 | {"text": enc(layers=2)}}
    return {"data": {**data, "root": "/"}, "model": model}


def labelled_sample(df: pd.DataFrame, target: str, fraction: float, seed: int) -> pd.DataFrame:
    """A stratified `fraction` of the train rows and of the val rows (at least one per class), all test rows."""
    rng = np.random.default_rng(1000 + seed)
    keep = []
    for s in ("train", "val"):
        part = df[df["split"] == s]
        for _, idx in part.groupby(target).indices.items():
            k = max(1, round(fraction * len(idx)))
            keep.extend(part.index[rng.choice(idx, k, replace=False)])
    keep.extend(df.index[df["split"] == "test"])
    return df.loc[sorted(keep)].reset_index(drop=True)


def pretrain_run(name: str, df: pd.DataFrame, seed: int, out: Path, quiet) -> tuple[Path, float]:
    run = out / "runs" / f"{name}-s{seed}-pretrain"
    if (run / "eval" / "val.json").exists():
        return run, json.loads((out / "runs" / f".{run.name}.json").read_text())["seconds"]
    cfg = model_config(name)
    cfg["data"]["split"] = {"val": 0.1, "test": 0.0, "seed": seed}
    cfg["data"]["cache_dir"] = str(out / "cache")
    cfg["train"] = {"epochs": 40, "patience": 5, "batch_size": 64, "lr": 1e-3, "seed": seed,
                    "output_dir": str(out / "runs")}
    rows = df[df["split"] != "test"].drop(columns=["split", TARGETS[name]]).reset_index(drop=True)
    t0 = time.time()
    mmfit.pretrain(cfg, df=rows, run_dir=run, console=quiet)
    sec = time.time() - t0
    (out / "runs" / f".{run.name}.json").write_text(json.dumps({"seconds": sec}))
    return run, sec


def finetune(name: str, df: pd.DataFrame, seed: int, init: Path | None, out: Path, quiet) -> dict:
    cfg = model_config(name)
    cfg["data"]["targets"] = {TARGETS[name]: "classification"}
    cfg["data"]["split"] = {"column": "split"}
    cfg["data"]["cache_dir"] = str(out / "cache")
    cfg["train"] = {"epochs": 60, "patience": 12, "batch_size": 32, "lr": 1e-3, "seed": seed,
                    "output_dir": str(out / "runs")}
    if init is not None:
        for e in cfg["model"]["encoders"].values():
            e["init"] = str(init)
    tag = "pretrained" if init is not None else "scratch"
    t0 = time.time()
    run = mmfit.train(copy.deepcopy(cfg), df=df, run_dir=out / "runs" / f"{name}-s{seed}-{tag}", console=quiet)
    m = json.loads((run / "eval" / "test.json").read_text())
    task = m["metrics"][TARGETS[name]]
    return {"macro_f1": task["macro_f1"], "accuracy": task["accuracy"], "best_epoch": m["best_epoch"],
            "seconds": round(time.time() - t0, 1)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path, nargs="?", default=Path("../shared/data"))
    ap.add_argument("--datasets", default="avdigits,emoji,demo")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--out", type=Path, default=Path("/tmp/mmfit-bench/pretrain"))
    args = ap.parse_args()
    console, quiet = Console(width=150), Console(quiet=True)
    res_path = args.out / "results.json"
    results = json.loads(res_path.read_text()) if res_path.exists() else {}
    seeds = [int(s) for s in args.seeds.split(",")]
    for name in args.datasets.split(","):
        df = manifest(name, args.data.resolve(), args.out)
        for seed in seeds:
            key = f"{name}/{seed}/{args.fraction}"
            if key in results:
                continue
            run, pre_s = pretrain_run(name, df, seed, args.out, quiet)
            sample = labelled_sample(df, TARGETS[name], args.fraction, seed)
            counts = sample["split"].value_counts().to_dict()
            a = finetune(name, sample, seed, None, args.out, quiet)
            b = finetune(name, sample, seed, run, args.out, quiet)
            results[key] = {"scratch": a, "pretrained": b, "pretrain_s": round(pre_s, 1), "rows": counts,
                            "pretrain_epochs": len((run / "metrics.jsonl").read_text().splitlines())}
            console.print(f"{name} seed {seed} ({counts}): scratch {a['macro_f1']:.4f}, pretrained "
                          f"{b['macro_f1']:.4f} (pretraining {pre_s:.0f}s)")
            res_path.write_text(json.dumps(results, indent=2))
    t = Table(title=f"test macro-F1 with {args.fraction:.0%} of the labels (mean ± sd over seeds {args.seeds})")
    for c in ("data set", "rows train/val/test", "(A) usual start", "(B) pretrained", "(B)-(A)", "per seed (B)-(A)",
              "pretraining s"):
        t.add_column(c, justify="left" if c == "data set" else "right")
    for name in args.datasets.split(","):
        rs = [results[f"{name}/{s}/{args.fraction}"] for s in seeds if f"{name}/{s}/{args.fraction}" in results]
        if not rs:
            continue
        a = [r["scratch"]["macro_f1"] for r in rs]
        b = [r["pretrained"]["macro_f1"] for r in rs]
        d = [y - x for x, y in zip(a, b)]
        rows = rs[0]["rows"]
        t.add_row(name, f"{rows.get('train')}/{rows.get('val')}/{rows.get('test')}", mean_sd(a), mean_sd(b), mean_sd(d),
                  ", ".join(f"{x:+.3f}" for x in d), f"{max(r['pretrain_s'] for r in rs):.0f}")
    console.print(t)
    console.print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
