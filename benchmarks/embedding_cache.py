"""What the embedding cache saves: the recipe's probe member (frozen MiniLM / EfficientNet-Lite0 at
224 px, audio statistics) trained twice on one data set with an empty cache.

    python benchmarks/embedding_cache.py ../shared/data [--dataset emoji] [--out /tmp/mmfit-bench/embedding-cache]

Run 1 computes the frozen encoders' outputs once, before its first epoch; every epoch then trains
only fusion and heads. Prints the one pass (what each epoch would cost running the encoders: the
pass plus the epoch's own work), the median later epoch, their ratio, and for run 2 (same data, a
new run directory) how many outputs it computed and how long its pass took.
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
from _common import machine  # noqa: E402
from probe import TARGETS, manifest  # noqa: E402

from mmfit import api  # noqa: E402
from mmfit.recipe.members import member_configs  # noqa: E402
from mmfit.training.loop import train  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path, nargs="?", default=Path("../shared/data"))
    ap.add_argument("--dataset", default="emoji", choices=list(TARGETS))
    ap.add_argument("--out", type=Path, default=Path("/tmp/mmfit-bench/embedding-cache"))
    args = ap.parse_args()
    console, quiet = Console(width=150), Console(quiet=True)
    shutil.rmtree(args.out / "runs", ignore_errors=True)
    shutil.rmtree(args.out / "cache", ignore_errors=True)
    path = manifest(args.dataset, args.data.resolve(), args.out)
    cfg, df, _ = api._infer(path, TARGETS[args.dataset], None, "/", [f"data.cache_dir={args.out / 'cache'}"], quiet)
    probe = member_configs(cfg)["probe"]
    rows = []
    for k in (1, 2):
        t0 = time.time()
        run = train(probe, df=df, run_dir=args.out / "runs" / f"probe-{k}", console=quiet)
        lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
        frozen = lines[0]["frozen_outputs"]
        once = sum(v["seconds"] for v in frozen.values())
        later = float(np.median([x["time_s"] for x in lines[1:]]))
        rows.append({"run": k, "computed": sum(v["computed"] for v in frozen.values()), "pass_s": once,
                     "first_epoch_with_pass_s": once + lines[0]["time_s"], "later_epoch_s": later,
                     "ratio": later / (once + lines[0]["time_s"]), "epochs": len(lines),
                     "wall_s": time.time() - t0, "per_modality": frozen})
        console.print(rows[-1])
    r1, r2 = rows
    console.print(f"{args.dataset}: the frozen encoders' one pass took {r1['pass_s']:.1f}s ({r1['computed']} outputs); "
                  f"an epoch running them would cost {r1['first_epoch_with_pass_s']:.1f}s, a later epoch costs "
                  f"{r1['later_epoch_s']:.2f}s: {r1['ratio']:.4f} of it ({r1['epochs']} epochs). Run 2 computed "
                  f"{r2['computed']} outputs; its pass (reading the cache) took {r2['pass_s']:.1f}s. Wall: run 1 "
                  f"{r1['wall_s']:.0f}s, run 2 {r2['wall_s']:.0f}s.")
    console.print(f"machine: {machine()}")
    (args.out / "results.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
