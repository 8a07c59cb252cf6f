"""Emoji: image + Unicode name -> group (9 classes), with subgroup as a second task.

    python benchmarks/emoji.py ../shared/data [--pretrained] [--out /tmp/mmfit-bench/emoji]

A stratified, seeded 70/15/15 split. Trains image-only, text-only and fused models and prints
test accuracy and macro-F1 of the group task for each. `--pretrained` uses the packaged
MiniLM text and EfficientNet-Lite0 image encoders instead of from-scratch ones.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from _common import run_variants  # noqa: E402


def load(data: Path) -> pd.DataFrame:
    root = (data / "emoji").resolve()
    df = pd.read_csv(root / "metadata.csv", dtype=str, keep_default_na=False)
    df = df.rename(columns={"file": "image", "name": "text"})[["image", "text", "group", "subgroup"]]
    df["image"] = [str(root / p) for p in df["image"]]
    return df


def base_config(pretrained: bool, epochs=None) -> dict:
    base = {
        "data": {
            "root": "/",  # image paths are absolute
            "columns": {"image": "image", "text": "text"},
            "targets": {"group": "classification", "subgroup": {"type": "classification", "weight": 0.5}},
            "split": {"val": 0.15, "test": 0.15, "seed": 0},
            "image": {"size": 64 if not pretrained else 96, "fit": "pad"},
            "text": {"max_length": 16, "vocab_size": 3000},
        },
        "model": {"dim": 128, "encoders": {"image": {"layers": 1, "patch": 8}, "text": {"layers": 2}}},
        "train": {"epochs": epochs or (30 if not pretrained else 12), "batch_size": 32, "patience": 6},
    }
    if pretrained:
        base["model"]["encoders"] = {"image": {"name": "efficientnet-lite0", "lr": 3e-4},
                                     "text": {"name": "minilm", "lr": 5e-5}}
    return base


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path, nargs="?", default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--pretrained", action="store_true")
    args = ap.parse_args()
    out = args.out or Path(f"/tmp/mmfit-bench/emoji{'-pretrained' if args.pretrained else ''}")
    out.mkdir(parents=True, exist_ok=True)
    df = load(args.data)
    base = base_config(args.pretrained, args.epochs)
    variants = {"image only": {"columns": ["image"]}, "text only": {"columns": ["text"]},
                "image + text (fused)": {}}
    run_variants(df, base, variants, out, "group")


if __name__ == "__main__":
    main()
