"""The held-out protocol (issue 36): zero-config against a tuned linear probe and against the best
single modality, on data sets the recipe was never developed on, each test split scored once.

    python benchmarks/heldout.py ../shared/data --final [--datasets digits-text,fsdd-nicolas,glyphs,spoken-letters]
        [--seeds 0,1,2] [--time-limit 10m] [--single-time-limit 5m] [--out /tmp/mmfit-bench/heldout]
    python benchmarks/heldout.py ../shared/data --round 2 --final     # round 2: small data (heldout_data.py)

The protocol, fixed before any of these data sets was trained on:
- data: benchmarks/heldout_data.py (built into --out on the first run);
- splits: the recipe's own seeded 70/15/15 split for digits-text, glyphs and spoken-letters
  (data.split.seed = the seed); fsdd-nicolas by speaker (nicolas test, george validation), where the
  seed changes training only;
- (a) the probe: scikit-learn logistic regression on the frozen features the (c) run's probe member
  computed (packaged MiniLM text, EfficientNet-Lite0 images, log-mel statistics for audio, standardised
  numbers and one-hot categories; all standardised), C among 0.001 .. 100 by validation macro-F1,
  then refit on train + val at that C (what a careful practitioner deploys);
- (b) each input modality alone through zero-config (the other columns ignored) with
  --single-time-limit; the best of them by **validation** macro-F1 is (b) (its test figure is read
  only for that one);
- (c) `mmfit train MANIFEST --target T --time-limit 10m`, nothing else given;
- the figure: test macro-F1, mean ± sd over the seeds per data set, and over data sets.
Nothing here is a development loop: without --final the script only builds the data and prints the
protocol. With --final every test split scored is appended to benchmarks/heldout_ledger.jsonl
(data set, seed, what, commit, time), and a (data set, seed) already there is refused, so the
ledger says how many times each test split was read; the figures go to benchmarks/heldout_results.json.
Both files are committed: the protocol (about 25 minutes a data set and seed on 2 cores) spans sessions.

Round 2 (`--round 2`) is the same protocol on the data sets heldout_data.py lists under ROUND2, with
its own ledger and results (heldout2_ledger.jsonl, heldout2_results.json) and its own frozen recipe:
the commit of its first test score. Round 1's test splits are spent; round 2 adds data nobody tuned to,
of the small shape of issue 36's own data set.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from _common import logistic_on_val, machine, mean_sd, probe_features  # noqa: E402
from heldout_data import BY_SPEAKER, EVERY, ROUND2, TARGETS, build  # noqa: E402

import mmfit  # noqa: E402
from mmfit.api import fit, seconds  # noqa: E402

LEDGER = Path(__file__).parent / "heldout_ledger.jsonl"
RESULTS = Path(__file__).parent / "heldout_results.json"  # committed: the protocol spans sessions
CS = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30, 100)


def ledger() -> list[dict]:
    return [json.loads(x) for x in LEDGER.read_text().splitlines() if x.strip()] if LEDGER.exists() else []


def record(name: str, seed: int, what: str, commit: str) -> None:
    with LEDGER.open("a") as f:
        f.write(json.dumps({"dataset": name, "seed": seed, "what": what, "commit": commit,
                            "time": datetime.datetime.now().isoformat(timespec="seconds")}) + "\n")


def _src_differs(commit: str) -> bool:
    """Whether the package's code here differs from `commit`'s (the frozen recipe)."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    return subprocess.run(["git", "diff", "--quiet", commit, "--", "src"], cwd=root).returncode != 0


def overrides(name: str, seed: int) -> list[str]:
    return [f"train.seed={seed}"] + ([] if name in BY_SPEAKER else [f"data.split.seed={seed}"])


def probe(run: Path) -> dict:
    """(a): C by validation macro-F1, then refit on train + val."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.preprocessing import StandardScaler

    X, y = probe_features(run)
    val_f1, C, _, _ = logistic_on_val(X, y, CS)
    both = np.concatenate([X["train"], X["val"]])
    sc = StandardScaler().fit(both)
    lr = LogisticRegression(C=C, max_iter=3000).fit(sc.transform(both), np.concatenate([y["train"], y["val"]]))
    pred = lr.predict(sc.transform(X["test"]))
    return {"macro_f1": float(f1_score(y["test"], pred, average="macro")),
            "accuracy": float(accuracy_score(y["test"], pred)), "C": C, "val_macro_f1": float(val_f1)}


def _scores(run: Path) -> dict:
    out = {}
    for split in ("val", "test"):
        m = json.loads((run / "eval" / f"{split}.json").read_text())["metrics"]
        m = m[next(iter(m))]
        out[split] = {"macro_f1": m["macro_f1"], "accuracy": m["accuracy"]}
    return out


def groups(path: Path, target: str) -> dict[str, list[str]]:
    """The input columns by modality: each file or text column alone, the numbers together."""
    df = pd.read_csv(path, dtype=str, keep_default_na=False, nrows=5)
    cols = [c for c in df.columns if c not in (target, "split")]
    numbers = [c for c in cols if pd.to_numeric(df[c], errors="coerce").notna().all()]
    out = {c: [c] for c in cols if c not in numbers}
    if numbers:
        out["numbers"] = numbers
    return out


def one(name: str, path: Path, seed: int, limit: float, single: float, out: Path, quiet, commit: str,
        save, res: dict) -> dict:
    """(c), then (a) on its features (both recorded in the ledger and saved at once: their test splits
    are read), then (b) modality by modality. `save(res)` keeps what there is so far; `res` holds what
    an earlier, interrupted session measured (never measured again)."""
    target, ov = EVERY[name], overrides(name, seed)
    if "c" not in res:
        t0 = time.time()
        run_c = out / f"{name}-s{seed}-zero-config"
        shutil.rmtree(run_c, ignore_errors=True)
        fit(path, target, limit, run_dir=run_c, root="/", overrides=ov, console=quiet)
        res = {"c": {**_scores(run_c), "seconds": round(time.time() - t0, 1),
                     "ensemble": json.loads((run_c / "ensemble.json").read_text())["weights"]}, "commit": commit}
        res["a"] = probe(run_c)
        for what in ("a", "c"):
            record(name, seed, what, commit)
        save(res)
    inputs = groups(path, target)
    res.setdefault("b_each", {})
    for g, cols in inputs.items():
        if g in res["b_each"]:
            continue
        t1 = time.time()
        run_b = out / f"{name}-s{seed}-only-{g}"
        shutil.rmtree(run_b, ignore_errors=True)
        fit(path, target, single, columns={c: "ignore" for cs in inputs.values() for c in cs if c not in cols},
            run_dir=run_b, root="/", overrides=ov, console=quiet)
        res["b_each"][g] = {**_scores(run_b), "seconds": round(time.time() - t1, 1)}
        save(res)
    best = max(res["b_each"], key=lambda g: res["b_each"][g]["val"]["macro_f1"])  # chosen on validation
    res["b"] = {"modality": best, **res["b_each"][best]["test"]}
    record(name, seed, "b", commit)
    save(res)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path, nargs="?", default=Path("../shared/data"))
    ap.add_argument("--round", type=int, default=1, choices=(1, 2))
    ap.add_argument("--datasets", default=None, help="default: the round's")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--time-limit", default="10m")
    ap.add_argument("--single-time-limit", default="5m")
    ap.add_argument("--out", type=Path, default=Path("/tmp/mmfit-bench/heldout"))
    ap.add_argument("--final", action="store_true", help="train and score the test splits (once each: the ledger)")
    args = ap.parse_args()
    from probe import _commit

    global LEDGER, RESULTS
    if args.round == 2:
        LEDGER, RESULTS = LEDGER.with_name("heldout2_ledger.jsonl"), RESULTS.with_name("heldout2_results.json")
    args.datasets = args.datasets or ",".join(TARGETS if args.round == 1 else ROUND2)

    console, quiet = Console(width=160), Console(quiet=True)
    names, seeds = args.datasets.split(","), [int(x) for x in args.seeds.split(",")]
    paths = {n: build(n, args.data.resolve(), args.out) for n in names}
    results_path = RESULTS
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    scored = {(e["dataset"], e["seed"]) for e in ledger()}
    if args.final:
        commit = _commit()
        if commit.endswith("+changes"):
            raise SystemExit("commit the recipe first: the ledger names the commit whose test scores it records")
        frozen = next((e["commit"] for e in ledger()), None)
        if frozen and _src_differs(frozen):
            raise SystemExit(
                f"the protocol's recipe is frozen at {frozen} (its first test scores); src/ differs here. Run it "
                f"from that commit: git worktree add /tmp/frozen {frozen} && cd /tmp/frozen/benchmarks && "
                f"PYTHONPATH=/tmp/frozen/src python heldout.py DATA --final ... (then copy {LEDGER.name} and "
                f"{RESULTS.name} back)")
        for name in names:
            for seed in seeds:
                key = f"{name}/{seed}"
                if (name, seed) in scored and ("b" in results.get(key, {}) or "c" not in results.get(key, {})):
                    console.print(f"{key}: its test split was scored already (ledger); not again")
                    continue
                def save(res, key=key):
                    results[key] = res
                    results_path.write_text(json.dumps(results, indent=2))

                r = one(name, paths[name], seed, seconds(args.time_limit), seconds(args.single_time_limit),
                        args.out / "runs", quiet, commit, save, dict(results.get(key, {})))
                console.print(f"{key}: (a) {r['a']['macro_f1']:.4f}  (b) {r['b']['modality']} {r['b']['macro_f1']:.4f}  "
                              f"(c) {r['c']['test']['macro_f1']:.4f} in {r['c']['seconds']:.0f}s")
    table = Table(title=f"test macro-F1, mean ± sd over seeds; (c) zero-config --time-limit {args.time_limit}")
    for c in ("data set", "seeds", "(a) probe, refit", "(b) best single (by val)", "(c) zero-config",
              "(c) - (a)", "(c) - (b)", "(c) wall s (max)"):
        table.add_column(c, justify="left" if c == "data set" else "right")
    every = {"ca": [], "cb": []}
    for name in names:
        rs = [results[f"{name}/{s}"] for s in seeds if f"{name}/{s}" in results]
        if not rs:
            continue
        a = [r["a"]["macro_f1"] for r in rs]
        c = [r["c"]["test"]["macro_f1"] for r in rs]
        withb = [r for r in rs if "b" in r]  # (b) comes last: a session may end before it
        cb = [r["c"]["test"]["macro_f1"] - r["b"]["macro_f1"] for r in withb]
        every["ca"] += list(np.subtract(c, a))
        every["cb"] += cb
        table.add_row(name, f"{len(rs)} ({len(withb)} with b)", mean_sd(a),
                      mean_sd([r["b"]["macro_f1"] for r in withb]) + "".join(f" {r['b']['modality']}" for r in withb),
                      mean_sd(c), mean_sd(np.subtract(c, a), True), mean_sd(cb, True),
                      f"{max(r['c']['seconds'] for r in rs):.0f}")
    if every["ca"]:
        table.add_row("all", str(len(every["ca"])), "", "", "", mean_sd(every["ca"], True), mean_sd(every["cb"], True), "")
    console.print(table)
    counts: dict = {}
    for e in ledger():
        counts[(e["dataset"], e["seed"])] = counts.get((e["dataset"], e["seed"]), 0) + (e["what"] == "c")
    console.print("test splits scored (ledger): " + (", ".join(f"{d}/{s} x{n}" for (d, s), n in sorted(counts.items()))
                                                      or "none yet"))
    console.print(f"machine: {machine()}; mmfit {mmfit.__version__}")


if __name__ == "__main__":
    main()
