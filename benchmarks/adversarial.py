"""Does adversarial training buy robustness to attacks, at what cost on clean inputs?

    python benchmarks/adversarial.py ../shared/data [--seeds 0,1,2] [--method pgd]
        [--out /tmp/mmfit-bench/adversarial]

AV-digits (an MNIST image degraded + a spoken digit -> the digit; trained on four speakers, tested
on the unseen fifth), benchmarks/pretrain.py's from-scratch image + audio model, all labels.
Per seed two runs with identical settings but `train.adversarial`: (A) none, (B) PGD (3 steps, the
documented epsilons: 0.03 on [0, 1] pixels, 0.5 on the log-mel, weight 0.5 of the loss). Then
`mmfit robustness` on each: the test macro-F1 (the run's headline metric; the ten digits are
balanced, so it sits within a point of accuracy) clean, under FGSM and PGD (5 steps) at 0.25, 0.5,
1 and 2 times those epsilons on both modalities at once, under each corruption at three
severities, and with each modality removed. Protocol fixed before any test figure was seen:
≤ 30 epochs, patience 8 on validation macro-F1, batch 32, lr 1e-3. Prints mean +- sd over seeds and
the two tables side by side; writes results.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, mean_sd  # noqa: E402
from pretrain import manifest, model_config  # noqa: E402

import mmfit  # noqa: E402
from mmfit.api import robustness  # noqa: E402


def config(out: Path, seed: int, method: str, epochs: int = 30) -> dict:
    cfg = model_config("avdigits")
    cfg["data"]["targets"] = {"digit": "classification"}
    cfg["data"]["split"] = {"column": "split"}
    cfg["data"]["cache_dir"] = str(out / "cache")
    cfg["train"] = {"epochs": epochs, "patience": 8, "batch_size": 32, "lr": 1e-3, "seed": seed,
                    "output_dir": str(out / "runs")}
    if method != "none":
        cfg["train"]["adversarial"] = {"method": method, "steps": 3, "weight": 0.5}
    return cfg


def flat(r: dict) -> dict:
    """A robustness result -> {row name: figure}."""
    out = {"clean": r["clean"]}
    for method, res in r["attacks"].items():
        for scale, v in res.items():
            out[f"{method.upper()} eps x{scale}"] = v
    for name, res in r["corruptions"].items():
        for sev, v in res.items():
            out[f"{name} severity {sev}"] = v
    for m, v in r["without"].items():
        out[f"without {m}"] = v
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path, nargs="?", default=Path("../shared/data"))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--method", default="pgd", choices=["fgsm", "pgd", "freelb"])
    ap.add_argument("--out", type=Path, default=Path("/tmp/mmfit-bench/adversarial"))
    ap.add_argument("--epochs", type=int, default=30, help="the protocol's 30; fewer only for a quick check")
    args = ap.parse_args()
    console, quiet = Console(width=160), Console(quiet=True)
    args.out.mkdir(parents=True, exist_ok=True)
    df = manifest("avdigits", args.data.resolve(), args.out)
    test = df[df["split"] == "test"].reset_index(drop=True)  # the unseen speaker (absolute paths)
    res_path = args.out / "results.json"
    results = json.loads(res_path.read_text()) if res_path.exists() else {}
    seeds = [int(s) for s in args.seeds.split(",")]
    arms = ("none", args.method)
    for seed in seeds:
        for arm in arms:
            key = f"{seed}/{arm}"
            if key in results:
                continue
            run = args.out / "runs" / f"avdigits-s{seed}-{arm}"
            if not (run / "eval" / "test.json").exists():  # a finished run is measured, an interrupted one redone
                shutil.rmtree(run, ignore_errors=True)
                mmfit.train(copy.deepcopy(config(args.out, seed, arm, args.epochs)), df=df, run_dir=run,
                            console=quiet)
            train_s = sum(json.loads(line)["time_s"] for line in (run / "metrics.jsonl").open())  # its epochs
            r = robustness(run, data=test, seed=seed, console=quiet)
            results[key] = {"train_s": round(train_s, 1), "best_epoch": json.loads(
                (run / "eval" / "test.json").read_text())["best_epoch"], "robustness": r}
            res_path.write_text(json.dumps(results, indent=2))
            f = flat(r)
            pgd1 = f.get("PGD eps x1")
            console.print(f"seed {seed} {arm}: clean {f['clean']:.4f}, PGD at the documented eps "
                          f"{pgd1 if pgd1 is None else round(pgd1, 4)} (training {train_s:.0f}s)")
    done = [s for s in seeds if all(f"{s}/{a}" in results for a in arms)]
    if not done:
        return
    rows = {a: [flat(results[f"{s}/{a}"]["robustness"]) for s in done] for a in arms}
    t = Table(title=f"AV-digits test macro-F1, mean ± sd over seeds {','.join(map(str, done))}: "
                    f"(A) standard training, (B) {args.method.upper()} adversarial training")
    for c in ("condition", "(A) standard", f"(B) {args.method}", "(B) − (A)", "per seed (B) − (A)"):
        t.add_column(c, justify="left" if c == "condition" else "right")
    for name in rows[arms[0]][0]:
        a = [r.get(name) for r in rows[arms[0]]]
        b = [r.get(name) for r in rows[arms[1]]]
        d = [y - x for x, y in zip(a, b) if x is not None and y is not None]
        t.add_row(name, mean_sd(a), mean_sd(b), mean_sd(d), ", ".join(f"{v:+.3f}" for v in d))
    console.print(t)
    secs = {a: [results[f"{s}/{a}"]["train_s"] for s in done] for a in arms}
    console.print("training wall s: " + "; ".join(f"{a} {', '.join(f'{v:.0f}' for v in secs[a])}" for a in arms))
    eps = results[f"{done[0]}/{arms[0]}"]["robustness"].get("epsilon", {})
    console.print(f"epsilons (x0.25, x0.5, x1, x2): {eps}")
    console.print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
