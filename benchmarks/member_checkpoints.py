"""Emoji, issue 14: which epoch should the recipe's members keep? Development seeds only.

    python benchmarks/member_checkpoints.py ../shared/data [--seeds 20,21,22] [--out /tmp/mmfit-bench/members]

Each member of the zero-config recipe keeps the weights of its epoch with the best validation macro-F1
(the default of every run). On 280 validation rows macro-F1 moves by points from one epoch to the
next, so that epoch is partly luck, and the probe is kept late (it has nearly memorised its training
rows, leaving the LP-FT member that starts from it little to learn). The variant keeps each member's
epoch with the lowest validation loss (`train.monitor=loss`: a proper, smooth score, the one the
ensemble selection itself weighs by).

Only the members that carry the ensemble on emoji run (the probe and its LP-FT member: on every emoji
seed so far the from-scratch member got no weight), with no time limit, no extra members and no refit,
so that the two variants differ only in the epoch kept; the same for both (deterministic on one machine).
Seeds 20-22 are development splits (never reported as test figures of the recipe): their test rows
are scored here to decide whether the change is worth a measurement on fresh seeds.
Prints per seed and variant: each member's validation and test macro-F1 and kept epoch, the ensemble's
test macro-F1 and weights, and the paired difference.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from _common import emoji_manifest, machine, mean_sd  # noqa: E402

import mmfit.recipe.orchestrate as recipe  # noqa: E402
from mmfit.api import fit  # noqa: E402

VARIANTS = {"best val macro-F1 (default)": None, "lowest val loss": "loss"}


def one(manifest: Path, seed: int, monitor, run: Path) -> dict:
    planned = recipe.member_configs

    def members(base):
        out = {k: v for k, v in planned(base).items() if k in ("probe", "finetune")}
        for c in out.values():
            c.train.monitor = monitor
        return out

    recipe.member_configs, extras = members, recipe.Members.extras
    recipe.Members.extras = lambda self: None
    try:
        shutil.rmtree(run, ignore_errors=True)
        fit(manifest, "group", None, run_dir=run, root="/", console=Console(quiet=True),
            overrides=[f"train.seed={seed}", f"data.split.seed={seed}", "recipe.refit=false"])
    finally:
        recipe.member_configs, recipe.Members.extras = planned, extras
    res = {}
    for m in ("probe", "finetune"):
        val, test = (json.loads((run / "members" / m / "eval" / f"{s}.json").read_text()) for s in ("val", "test"))
        res[m] = {"val": val["metrics"]["group"]["macro_f1"], "test": test["metrics"]["group"]["macro_f1"],
                  "epoch": val.get("best_epoch")}
    res["ensemble"] = json.loads((run / "eval" / "test.json").read_text())["metrics"]["group"]["macro_f1"]
    res["weights"] = {f"{w['member']}/{w['head']}": round(w["weight"], 2)
                      for w in json.loads((run / "ensemble.json").read_text())["weights"]["group"]}
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path, nargs="?", default=Path("../shared/data"))
    ap.add_argument("--seeds", default="20,21,22")
    ap.add_argument("--out", type=Path, default=Path("/tmp/mmfit-bench/members"))
    args = ap.parse_args()
    manifest = emoji_manifest(args.data, args.out)
    console = Console(width=160)
    table = Table(title="emoji, probe + LP-FT members: the epoch each keeps (development seeds)")
    for c in ("seed", "members keep", "probe val / test (epoch)", "finetune val / test (epoch)",
              "ensemble test", "weights"):
        table.add_column(c)
    diffs = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        got = {}
        for name, monitor in VARIANTS.items():
            r = got[name] = one(manifest, seed, monitor, args.out / f"s{seed}-{monitor or 'f1'}")
            table.add_row(str(seed), name, *(f"{r[m]['val']:.4f} / {r[m]['test']:.4f} ({r[m]['epoch'] + 1})"
                                            for m in ("probe", "finetune")),
                          f"{r['ensemble']:.4f}", ", ".join(f"{k} {v}" for k, v in r["weights"].items()))
            console.print(f"seed {seed}, {name}: ensemble test macro-F1 {r['ensemble']:.4f}")
        a, b = (got[n]["ensemble"] for n in VARIANTS)
        diffs.append(b - a)
    console.print(table)
    console.print(f"lowest val loss - best val macro-F1, ensemble test macro-F1: {mean_sd(diffs, signed=True)} "
                  f"({', '.join(f'{x:+.4f}' for x in diffs)})")
    console.print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
