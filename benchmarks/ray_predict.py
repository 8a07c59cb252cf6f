"""Batch prediction (or embedding) on Ray against the local path: rows/s, per worker, and what 10 M
rows would take.

    python benchmarks/ray_predict.py --run RUN --manifest MANIFEST [--rows 2000] [--workers 1,2] [--shards 4]
    python benchmarks/ray_predict.py --what embed ...     # `mmfit embed`: the encoded columns as embeddings

RUN: any run (`mmfit demo` writes one: mmfit-demo/runs/diagnosis, with its manifest
mmfit-demo/data/manifest.csv). The manifest's rows are repeated up to --rows and cut into --shards
CSV files; then, in one process on one machine:
1. `mmfit predict` (local, one process): rows/s;
2. `mmfit predict --backend ray` on a local cluster (ray.init with every CPU) with each --workers
   count: rows/s of the whole job (shards read by tasks, actors started and their models loaded,
   Parquet written), and per worker;
and checks that the Ray predictions (embeddings) equal the local ones. The 10 M-row figure is arithmetic from
the per-worker rate: 10e6 / (rows/s per worker x workers), for a few cluster sizes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, ten_million  # noqa: E402

from mmfit import api  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--out", type=Path, default=Path("/tmp/mmfit-bench/ray-predict"))
    ap.add_argument("--what", choices=("predict", "embed"), default="predict")
    args = ap.parse_args()
    call = api.predict if args.what == "predict" else api.embed
    shutil.rmtree(args.out, ignore_errors=True)
    (args.out / "manifest").mkdir(parents=True)
    df = pd.read_csv(args.manifest, dtype=str, keep_default_na=False)
    df = pd.concat([df] * (args.rows // len(df) + 1), ignore_index=True).iloc[:args.rows]
    per = -(-len(df) // args.shards)
    for i in range(args.shards):
        df.iloc[i * per:(i + 1) * per].to_csv(args.out / "manifest" / f"part-{i}.csv", index=False)
    root = args.manifest.resolve().parent
    print(f"{machine()}; {args.what}; run {args.run}; {len(df)} rows in {args.shards} shards")

    t = time.time()
    local = call(args.run, df, root=root, on_error="skip")
    local_s = time.time() - t
    print(f"local (one process): {len(df) / local_s:.1f} rows/s ({local_s:.1f} s)")

    import ray

    t = time.time()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, configure_logging=False)
    print(f"ray.init: {time.time() - t:.1f} s")
    rates = {}
    for w in [int(x) for x in args.workers.split(",")]:
        info = call(args.run, str(args.out / "manifest"), args.out / f"preds-{w}", root=root,
                    on_error="skip", backend="ray", workers=w, console=None)
        got = pd.concat([pd.read_parquet(p) for p in sorted((args.out / f"preds-{w}").glob("*.parquet"))])
        same = len(got) == len(local) and all(_same(got[c], local[c]) for c in local.columns.drop("row"))
        rates[w] = info["rows_per_s"] / w
        print(f"ray, {w} worker(s): {info['rows_per_s']:.1f} rows/s ({info['seconds']:.1f} s), "
              f"{rates[w]:.1f} rows/s per worker; same {args.what} output as local: {same}")
    ten_million(max(rates.values()), "worker")


def _same(got: pd.Series, local: pd.Series) -> bool:
    """Numbers within 1e-4 (embeddings: every element), anything else equal as text."""
    import numpy as np

    got, local = got.reset_index(drop=True), local.reset_index(drop=True)
    if local.map(lambda v: isinstance(v, (list, np.ndarray))).any():
        return all(np.abs(np.asarray(a, float) - np.asarray(b, float)).max() < 1e-4 if b is not None else a is None
                   for a, b in zip(got, local))
    if pd.api.types.is_numeric_dtype(local):
        return bool(abs(got.to_numpy(float) - local.to_numpy(float)).max() < 1e-4)
    return bool((got.astype(str).to_numpy() == local.astype(str).to_numpy()).all())

if __name__ == "__main__":
    main()
