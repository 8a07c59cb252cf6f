"""A column of vectors: embeddings computed elsewhere, brought as lists of numbers in a JSONL manifest.

    python benchmarks/vectors.py ../shared/data [--seeds 1,2,3] [--time-limit 3m] [--out /tmp/mmfit-bench/vectors]

The emoji names (1,870 rows, 9 groups), embedded by MiniLM (mean-pooled, 384 numbers; what a user
brings from another tool), one list per row in `emb`, nothing else but the target `group`. Per seed,
on the same stratified 70/15/15 split (the zero-config run's own):
(i)   a scikit-learn logistic regression on the vectors, standardised, C chosen on validation;
(ii)  `mmfit.fit(manifest, "group", time_limit)`, nothing else given: `emb` is inferred a vector;
(iii) the same with `columns={"emb": "text"}`: what zero-config did before the vector role existed
      (the lists read as free text, their digits tokenised by the packaged MiniLM).
Prints test macro-F1 per seed and mean ± sd, and the wall time of each run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console

sys.path.insert(0, str(Path(__file__).parent))
from _common import logistic_on_val, machine, mean_sd  # noqa: E402

from mmfit.api import fit, seconds  # noqa: E402
from mmfit.run.loaded import load_run


def manifest(data: Path, out: Path) -> Path:
    import emoji
    from emoji_levers import text_features

    path = out / "emoji-vectors.jsonl"
    if not path.exists():
        df = emoji.load(data)[["text", "group"]]
        df["emb"] = [[round(float(x), 5) for x in v] for v in text_features(df["text"].tolist())]
        df[["emb", "group"]].to_json(path, orient="records", lines=True)
    return path


def logistic(run: Path, path: Path) -> float:
    """(i) on the zero-config run's own split."""
    import pandas as pd
    from sklearn.metrics import f1_score

    df = pd.read_json(path, lines=True)
    X, y = np.stack(df["emb"].to_numpy()), df["group"].to_numpy()
    splits = load_run(run).data()
    rows = {s: splits[s].rows.numpy() for s in ("train", "val", "test")}
    _, _, lr, sc = logistic_on_val({s: X[r] for s, r in rows.items()}, {s: y[r] for s, r in rows.items()},
                                   (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1, 3, 10))
    return float(f1_score(y[rows["test"]], lr.predict(sc.transform(X[rows["test"]])), average="macro"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path, nargs="?", default=Path("../shared/data"))
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--time-limit", default="3m")
    ap.add_argument("--out", type=Path, default=Path("/tmp/mmfit-bench/vectors"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    console, quiet = Console(width=140), Console(quiet=True)
    path = manifest(args.data.resolve(), args.out)
    got: dict[str, list] = {"(i) logistic regression": [], "(ii) zero-config (vector)": [],
                            "(iii) read as text": []}
    for seed in [int(s) for s in args.seeds.split(",")]:
        ov = [f"train.seed={seed}", f"data.split.seed={seed}"]
        for name, columns in (("(ii) zero-config (vector)", None), ("(iii) read as text", {"emb": "text"})):
            run = args.out / f"s{seed}-{'vector' if columns is None else 'text'}"
            shutil.rmtree(run, ignore_errors=True)
            t = time.time()
            fit(path, "group", seconds(args.time_limit), columns=columns, run_dir=run, overrides=ov, console=quiet)
            m = json.loads((run / "eval" / "test.json").read_text())["metrics"]["group"]["macro_f1"]
            role = {r["column"]: r["role"] for r in json.loads((run / "ensemble.json").read_text())["roles"]}["emb"]
            got[name].append(m)
            console.print(f"seed {seed} {name}: test macro-F1 {m:.4f} ({role}, {time.time() - t:.0f}s)")
            if columns is None:
                a = logistic(run, path)
                got["(i) logistic regression"].append(a)
                console.print(f"seed {seed} (i) logistic regression: test macro-F1 {a:.4f}")
    for name, xs in got.items():
        console.print(f"{name}: {mean_sd(xs)} ({', '.join(f'{v:.4f}' for v in xs)})")
    console.print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
