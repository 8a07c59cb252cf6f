"""What training again on train + val is worth on a data set, measured on the linear probe: the
reason the recipe refits its chosen members (recipe.refit).

    python benchmarks/refit_gain.py RUN [--splits 12]

RUN: a zero-config run (`mmfit.fit`, e.g. one `benchmarks/probe.py` wrote); its probe member's
frozen features (read back from the embedding cache) of every row are used. Over `--splits`
random stratified 70/15/15 splits (seeds 10, 11, ...), a logistic regression with C chosen on
validation is fitted on train, then refitted with the same C on train + val; prints the test
macro-F1 of both per split and the mean +- sd of the difference.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine  # noqa: E402


def features(run: Path) -> tuple[np.ndarray, np.ndarray]:
    from mmfit.recipe.selection import loaded_with_outputs
    from mmfit.run.store import Run

    loaded, splits, frozen = loaded_with_outputs(Run(run / "members" / "probe"))
    task = next(iter(loaded.pre.targets))
    xs, ys = [], []
    for data in splits.values():
        b = data.batch(torch.arange(len(data)))
        xs.append(torch.cat([b.inputs[m]["pooled"].float() for m in loaded.pre.modalities if m in frozen], 1).numpy())
        ys.append(b.targets[task].numpy().astype(int))
    return np.concatenate(xs), np.concatenate(ys)


def main():
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--splits", type=int, default=12)
    args = ap.parse_args()
    X, y = features(args.run)
    print(f"{len(y)} rows, {X.shape[1]} features, class counts {np.bincount(y).tolist()}")
    gains = []
    for seed in range(10, 10 + args.splits):
        tv, te = train_test_split(np.arange(len(y)), test_size=0.15, stratify=y, random_state=seed)
        tr, va = train_test_split(tv, test_size=0.15 / 0.85, stratify=y[tv], random_state=seed)
        sc, best = StandardScaler().fit(X[tr]), None
        for C in (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30, 100):
            m = LogisticRegression(C=C, max_iter=3000).fit(sc.transform(X[tr]), y[tr])
            v = f1_score(y[va], m.predict(sc.transform(X[va])), average="macro")
            if best is None or v > best[0]:
                best = (v, C, m)
        train_only = f1_score(y[te], best[2].predict(sc.transform(X[te])), average="macro")
        sc2 = StandardScaler().fit(X[tv])
        refit = LogisticRegression(C=best[1], max_iter=3000).fit(sc2.transform(X[tv]), y[tv])
        both = f1_score(y[te], refit.predict(sc2.transform(X[te])), average="macro")
        gains.append(both - train_only)
        print(f"split {seed}: C={best[1]}, test macro-F1 train only {train_only:.4f}, train + val {both:.4f}, "
              f"gain {both - train_only:+.4f}", flush=True)
    g = np.asarray(gains)
    print(f"refit on train + val: {g.mean():+.4f} ± {g.std(ddof=1):.4f} test macro-F1 over {len(g)} splits "
          f"({int((g > 0).sum())} up, {int((g < 0).sum())} down)")
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
