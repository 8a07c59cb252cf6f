"""Emoji, issue 14: does a k-nearest-neighbours member help the ensemble? Development seeds only.

    python benchmarks/neighbours_member.py ../shared/data [--seeds 20,21,22] [--out /tmp/mmfit-bench/neighbours] [--reuse]

The recipe's `neighbours` member reads the same frozen MiniLM and EfficientNet-Lite0 outputs as the
probe, by the k nearest training rows (k and a temperature chosen on validation; nothing trained).
Per seed, the members that carry the ensemble on emoji (probe, neighbours, LP-FT finetune; on every
emoji seed so far the from-scratch member got no weight) are trained once, with no time limit, extra
members or refit; ensemble selection on validation is then run twice on the same members' outputs,
with and without the neighbours member's candidates, so that the two differ only in that. Seeds 20-22
are development splits (never reported as test figures of the recipe): their test rows decide whether
the member is worth a measurement on fresh seeds. Prints per seed: each member's validation and test
macro-F1, both ensembles' test macro-F1 and weights, and the paired difference.
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
from mmfit.config import load_config  # noqa: E402
from mmfit.data.cache import FeatureCache  # noqa: E402
from mmfit.run.store import Run  # noqa: E402

MEMBERS = ("probe", "neighbours", "finetune")


def one(manifest: Path, seed: int, run: Path, reuse: bool) -> dict:
    extras = recipe.Members.extras
    recipe.Members.extras = lambda self: None
    try:
        if reuse and (run / "ensemble.json").exists():
            return scores(run)
        shutil.rmtree(run, ignore_errors=True)
        fit(manifest, "group", None, run_dir=run, root="/", console=Console(quiet=True),
            overrides=[f"train.seed={seed}", f"data.split.seed={seed}", "recipe.refit=false",
                       "recipe.exclude=[scratch]"])
    finally:
        recipe.Members.extras = extras
    return scores(run)


def scores(run: Path) -> dict:
    """The members' validation and test macro-F1; the ensemble selected with and without neighbours."""
    cfg = load_config(run / "config.yaml")
    conditions = [("all", [])]
    logits, splits, pre = {}, None, None
    for m in MEMBERS:
        logits[m], splits, pre = recipe.member_logits(Run(run / "members" / m), conditions,
                                                      FeatureCache(cfg.data.cache_dir), lambda *a: None)
    res = {}
    for m in MEMBERS:
        val, test = (json.loads((run / "members" / m / "eval" / f"{s}.json").read_text()) for s in ("val", "test"))
        res[m] = {"val": val["metrics"]["group"]["macro_f1"], "test": test["metrics"]["group"]["macro_f1"]}
    res["k"] = Run(run / "members" / "neighbours").config().model.neighbours
    for name, keep in (("without", ("probe", "finetune")), ("with", MEMBERS)):
        sub = {k: logits[k] for k in keep}
        temps, scores = recipe.calibrate(sub, splits, pre)
        weights, _ = recipe.select(scores, splits, pre)
        ev = recipe.ensemble_evaluation(scores, weights, splits["test"], pre, "test", conditions)
        res[name] = {"test": ev["metrics"]["group"]["macro_f1"],
                     "weights": {f"{k}/{h}": round(w, 2) for (k, h), w in weights["group"].items() if w > 0}}
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path, nargs="?", default=Path("../shared/data"))
    ap.add_argument("--seeds", default="20,21,22")
    ap.add_argument("--out", type=Path, default=Path("/tmp/mmfit-bench/neighbours"))
    ap.add_argument("--reuse", action="store_true", help="score the members a previous run of this script trained")
    args = ap.parse_args()
    manifest = emoji_manifest(args.data, args.out)
    console = Console(width=200)
    table = Table(title="emoji: the ensemble with and without the neighbours member (development seeds)")
    for c in ("seed", "probe val / test", "neighbours val / test (k, T)", "finetune val / test",
              "ensemble test without", "with", "weights with"):
        table.add_column(c)
    diffs = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        r = one(manifest, seed, args.out / f"s{seed}", args.reuse)
        nb = r["k"]
        table.add_row(str(seed), *(f"{r[m]['val']:.4f} / {r[m]['test']:.4f}" + (
            f" ({nb.k}, {nb.temperature:g})" if m == "neighbours" else "") for m in MEMBERS),
                      f"{r['without']['test']:.4f}", f"{r['with']['test']:.4f}",
                      ", ".join(f"{k} {v}" for k, v in r["with"]["weights"].items()))
        console.print(f"seed {seed}: without {r['without']['test']:.4f} {r['without']['weights']}; "
                      f"with {r['with']['test']:.4f} {r['with']['weights']}")
        diffs.append(r["with"]["test"] - r["without"]["test"])
    console.print(table)
    console.print(f"with - without the neighbours member, ensemble test macro-F1: {mean_sd(diffs, signed=True)} "
                  f"({', '.join(f'{x:+.4f}' for x in diffs)})")
    console.print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
