"""TPE vs grid search with the same budget on the demo (synthetic clinic).

    python benchmarks/tune.py [--trials 9] [--patients 600] [--epochs 8] [--workers 1] [--val 0.15]

Grid: k learning rates x k widths, k = sqrt(trials) (9 -> 3x3, 16 -> 4x4). TPE (and random, for reference): the same
ranges, continuous (lr log-uniform, width in steps of 16), the same number of trials. No
pruning, so every trial trains its full epochs and the samplers alone differ. Objective: the
validation diagnosis macro-F1 (the loop's monitor); the best trial's test macro-F1 is printed
too. Studies go to SQLite under --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine  # noqa: E402

from mmfit import api  # noqa: E402
from mmfit.data.demo import generate  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("/tmp/mmfit-bench/tune"))
    ap.add_argument("--trials", type=int, default=9)
    ap.add_argument("--patients", type=int, default=600)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--samplers", default="grid,tpe,random")
    ap.add_argument("--val", type=float, default=0.15, help="validation fraction of the demo split")
    args = ap.parse_args()
    console = Console(width=140)
    args.out.mkdir(parents=True, exist_ok=True)
    manifest = generate(args.out / "data", n=args.patients)
    base = yaml.safe_load(api.packaged_config("demo").read_text())
    base["data"]["manifest"] = str(manifest)
    base["data"]["cache_dir"] = str(args.out / "cache")
    base["data"]["split"]["val"] = args.val
    base["train"].update(epochs=args.epochs, output_dir=str(args.out / "runs"))
    k = max(2, round(args.trials ** 0.5))  # a k x k grid holds the budget (9 -> 3x3, 16 -> 4x4)
    lrs = [float(f"{v:.2g}") for v in np.geomspace(3e-4, 3e-3, k)]
    dims = [int(round(v / 16) * 16) for v in np.linspace(48, 144, k)]
    grid = {"train.lr": {"type": "float", "choices": lrs}, "model.dim": {"type": "int", "choices": dims}}
    cont = {"train.lr": {"type": "float", "low": 3e-4, "high": 3e-3, "log": True},
            "model.dim": {"type": "int", "low": 48, "high": 144, "step": 16}}
    results = {}
    for sampler in args.samplers.split(","):
        cfg = json.loads(json.dumps(base))
        cfg["tune"] = {"sampler": sampler, "pruner": "none", "trials": args.trials, "seed": 0, "startup_trials": 3,
                       "space": grid if sampler == "grid" else cont}
        out = args.out / f"study-{sampler}"
        if out.exists():
            import shutil

            shutil.rmtree(out)
        t0 = time.time()
        s = api.tune(cfg, workers=args.workers, out=out, console=Console(quiet=True))
        best_run = Path(json.loads((out / "tune.json").read_text())["out"]) / "trials" / f"trial-{s['best_trial']:04d}"
        test = json.loads((best_run / "eval" / "test.json").read_text())["metrics"]["diagnosis"]["macro_f1"]
        results[sampler] = {**s, "test_macro_f1": test, "wall_s": time.time() - t0}
        console.print(f"{sampler}: best val {s['best_value']:.4f} (trial {s['best_trial']}, {s['best_params']}), "
                      f"test {test:.4f}, {time.time() - t0:.0f}s")
    table = Table(title=f"tune on the demo ({args.patients} patients, {args.epochs} epochs/trial, {args.trials} trials each)")
    for c in ("sampler", "trials", "best val macro-F1", "best trial", "best params", "its test macro-F1", "seconds"):
        table.add_column(c, justify="left" if c in ("sampler", "best params") else "right")
    for k, r in results.items():
        params = ", ".join(f"{p}={v:.2g}" if isinstance(v, float) else f"{p}={v}" for p, v in r["best_params"].items())
        table.add_row(k, str(r["completed"]), f"{r['best_value']:.4f}", str(r["best_trial"]), params,
                      f"{r['test_macro_f1']:.4f}", f"{r['wall_s']:.0f}")
    console.print(table)
    console.print(f"machine: {machine()}")
    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
