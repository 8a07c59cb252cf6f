"""Matching (retrieval) and zero-shot classification on real data.

    python benchmarks/matching.py ../shared/data [--datasets avdigits,emoji] [--seeds 0,1,2]
        [--out /tmp/mmfit-bench/matching]

- AV-digits, image <-> audio: a matching task between the two columns (from-scratch encoders, as
  benchmarks/pretrain.py), trained on four speakers, tested on the unseen speaker's 500 pairs; once
  from random weights and once from benchmarks/pretrain.py's pretraining run of the same seed (its
  runs are reused from --pretrain-out, else run). A pair is an MNIST image and a recording of the
  same digit drawn independently, so only the digit can be found: besides recall@1/10 of the exact
  partner (chance 1/500, 10/500) it prints class-level recall@1/10 (a hit: a gallery item of the
  query's digit; chance about 0.10 and 0.65).
- emoji, image <-> name: packaged encoders (EfficientNet-Lite0 frozen, MiniLM's blocks fine-tuned at
  3e-5), the split 70/15/15 stratified by group with seed 0; recall@1/10 of the exact name among the
  test split's names, beside chance. Then zero-shot group classification: each test image goes to
  the group whose name (the prompt "{group}", through the text side) fits best, no group label
  used; beside chance (the largest group's share) and beside a supervised probe: logistic
  regression on the same frozen image features with the training split's group labels (C chosen
  on validation).
Protocol fixed before any test score was seen: 30 epochs at most, patience 6, selection on the
validation MRR, batch 64 (in-batch negatives). 3 seeds (training seeds; the split stays). Prints
mean +- sd and writes results.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, mean_sd  # noqa: E402
from pretrain import manifest, model_config, pretrain_run  # noqa: E402

import mmfit  # noqa: E402


def config(name: str, out: Path, seed: int, init: Path | None = None) -> dict:
    if name == "avdigits":
        cfg = model_config("avdigits")
        between = ["image", "audio"]
        for e in cfg["model"]["encoders"].values():
            if init is not None:
                e["init"] = str(init)
    else:
        cfg = {"data": {"root": "/", "columns": {"image": "image", "text": "text"}, "text": {"max_length": 24}},
               "model": {"dim": 128, "encoders": {
                   "image": {"name": "efficientnet-lite0", "finetune": "frozen"},
                   "text": {"name": "minilm", "finetune": {"strategy": "partial", "layers": 1000}, "lr": 3e-5}}}}
        between = ["image", "text"]
    cfg["data"]["targets"] = {"pair": {"type": "matching", "between": between}}
    cfg["data"]["split"] = {"column": "split"}
    cfg["data"]["cache_dir"] = str(out / "cache")
    cfg["train"] = {"epochs": 30, "patience": 6, "batch_size": 64, "lr": 1e-3, "seed": seed,
                    "output_dir": str(out / "runs"), "modality_dropout": 0.0}
    return cfg


# AV-digits is matched twice: from random weights, and from benchmarks/pretrain.py's pretraining run
# of the same seed (all rows outside the test split, labels hidden: the same rows this task trains on)
STARTS = {"avdigits": ["", "+pretrain"], "emoji": [""]}


def digit_recall(p, df: pd.DataFrame) -> dict:
    """Class-level recall@1 and @10 (a hit is any test item of the query's digit), both directions.

    A pair is an image and a recording of the same digit drawn independently, so only the digit can be
    found: the class-level recall@K of image retrieval benchmarks (CUB, SOP). Chance at 1 is the share
    of the query's digit among the gallery (about 0.1)."""
    test = df[df["split"] == "test"].reset_index(drop=True)
    img = p.embed(test[["image"]], column="image", root=Path("/"))
    aud = p.embed(test[["audio"]], column="audio", root=Path("/"))
    sim = img @ aud.T
    y = test["digit"].to_numpy()
    out = {}
    for k in (1, 10):
        hits = [(y[np.argsort(-s, axis=1)[:, :k]] == y[:, None]).any(1).mean() for s in (sim, sim.T)]
        out[f"digit_recall@{k}"] = float(np.mean(hits))
    out["digit_chance@1"] = float((pd.Series(y).value_counts(normalize=True) ** 2).sum())
    return out


def image_features(p, df: pd.DataFrame) -> np.ndarray:
    """The frozen image encoder's pooled features (the probe's inputs)."""
    tensors, _ = p.pre.transform(df[["image"]].assign(text=None), Path("/"), log=lambda *_: None)
    feats = []
    with torch.no_grad():
        for b in tensors.batches(64):
            feats.append(p.model.encoders["image"](b.inputs["image"]).pooled)
    return torch.cat(feats).numpy()


def emoji_zero_shot(p, df: pd.DataFrame) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    groups = sorted(df["group"].unique())
    test = df[df["split"] == "test"].reset_index(drop=True)
    zs = p.zero_shot(test[["image"]], groups, template="{}", root=Path("/"))
    acc = float((zs["label"] == test["group"]).mean())
    chance = float(test["group"].value_counts(normalize=True).max())
    X = {s: image_features(p, df[df["split"] == s].reset_index(drop=True)) for s in ("train", "val", "test")}
    y = {s: df[df["split"] == s]["group"].to_numpy() for s in ("train", "val", "test")}
    sc = StandardScaler().fit(X["train"])
    best = None
    for C in (0.001, 0.01, 0.1, 1, 10):
        lr = LogisticRegression(C=C, max_iter=3000).fit(sc.transform(X["train"]), y["train"])
        v = float((lr.predict(sc.transform(X["val"])) == y["val"]).mean())
        if best is None or v > best[0]:
            best = (v, lr)
    probe = float((best[1].predict(sc.transform(X["test"])) == y["test"]).mean())
    return {"zero_shot_accuracy": acc, "chance": chance, "probe_accuracy": probe, "groups": len(groups)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path, nargs="?", default=Path("../shared/data"))
    ap.add_argument("--datasets", default="avdigits,emoji")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", type=Path, default=Path("/tmp/mmfit-bench/matching"))
    ap.add_argument("--pretrain-out", type=Path, default=Path("/tmp/mmfit-bench/pretrain"),
                    help="where benchmarks/pretrain.py keeps its pretraining runs (reused, else run here)")
    args = ap.parse_args()
    console, quiet = Console(width=150), Console(quiet=True)
    res_path = args.out / "results.json"
    results = json.loads(res_path.read_text()) if res_path.exists() else {}
    seeds = [int(s) for s in args.seeds.split(",")]
    for name in args.datasets.split(","):
        df = manifest(name, args.data.resolve(), args.out)
        for seed, start in [(s, st) for s in seeds for st in STARTS[name]]:
            key = f"{name}{start}/{seed}"
            if key in results:
                continue
            init = pretrain_run(name, df, seed, args.pretrain_out, quiet)[0] if start else None
            run = mmfit.train(config(name, args.out, seed, init), df=df, console=quiet,
                              run_dir=args.out / "runs" / f"{name}{start}-s{seed}")
            m = json.loads((run / "eval" / "test.json").read_text())["metrics"]["pair"]
            r = {k: m[k] for k in ("n", "recall@1", "recall@10", "median_rank", "mrr", "chance_recall@1")}
            r["directions"] = m["directions"]
            p = mmfit.Predictor.load(run)
            if name == "avdigits":
                r.update(digit_recall(p, df))
            else:
                r.update(emoji_zero_shot(p, df))
            results[key] = r
            console.print(f"{name} seed {seed}: " + ", ".join(f"{k} {v:.4f}" for k, v in r.items()
                                                               if isinstance(v, float)))
            res_path.write_text(json.dumps(results, indent=2))
    t = Table(title=f"retrieval on the test split (mean ± sd over seeds {args.seeds})")
    for c in ("data set", "pairs", "recall@1", "chance@1", "recall@10", "chance@10", "median rank", "other"):
        t.add_column(c, justify="left" if c in ("data set", "other") else "right")
    for name in [n + st for n in args.datasets.split(",") for st in STARTS[n]]:
        rs = [results[f"{name}/{s}"] for s in seeds if f"{name}/{s}" in results]
        if not rs:
            continue
        n = rs[0]["n"]
        other = (f"digit recall@1 {mean_sd([r['digit_recall@1'] for r in rs])} (chance {rs[0]['digit_chance@1']:.4f}), "
                 f"digit recall@10 {mean_sd([r['digit_recall@10'] for r in rs])}" if name.startswith("avdigits") else
                 f"zero-shot group accuracy {mean_sd([r['zero_shot_accuracy'] for r in rs])}, chance "
                 f"{rs[0]['chance']:.4f}, supervised image probe {mean_sd([r['probe_accuracy'] for r in rs])}")
        t.add_row(name, str(n), mean_sd([r["recall@1"] for r in rs]), f"{1 / n:.4f}", mean_sd([r["recall@10"] for r in rs]),
                  f"{min(1, 10 / n):.4f}", mean_sd([r["median_rank"] for r in rs]), other)
    console.print(t)
    console.print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
