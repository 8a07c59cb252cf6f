"""Small real data: mmfit zero-config against a linear probe on its own frozen features, and against
its best single-modality model, on emoji, AV-digits and the demo, 3 seeds each, side by side.

    python benchmarks/probe.py ../shared/data [--datasets emoji,avdigits,demo] [--seeds 0,1,2]
        [--time-limit 10m] [--single-time-limit 5m] [--out /tmp/mmfit-bench/probe] [--remeasure] [--variant TAG:KEY=VALUE]

Per data set and seed, on the same split:
(a) probe: scikit-learn logistic regression, C chosen on validation (0.001 .. 100), on the
    concatenated frozen features of the packaged encoders (MiniLM text, EfficientNet-Lite0 images
    at 224 px, spectral statistics for audio: per-band mean / spread / change of the log-mel),
    standardised numbers and one-hot categories, all standardised;
(b) the best single-modality mmfit model: `mmfit.fit` on each input modality alone (the others
    set to `ignore`), the best of them on test (an optimistic choice for (b)); it runs after (a) and (c) are
    done everywhere, seed by seed across the data sets;
(c) mmfit zero-config: `mmfit.fit(manifest, target=..., time_limit=...)`, nothing else given.
Splits: emoji and the demo 70/15/15 stratified with the seed; AV-digits by speaker (one speaker
test, one validation, four train), so its seeds change training only. Prints test macro-F1 and
accuracy per seed and mean +- sd, wall times, and writes results.json.
"""

from __future__ import annotations

import argparse
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

import mmfit  # noqa: E402
from mmfit.api import fit, seconds  # noqa: E402

TARGETS = {"emoji": "group", "avdigits": "digit", "demo": "diagnosis"}


def manifest(name: str, data: Path, out: Path) -> Path:
    """The data set as a plain manifest a user would bring: inputs and the target, absolute paths."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.csv"
    if path.exists():
        return path
    if name == "emoji":
        import emoji

        df = emoji.load(data)[["image", "text", "group"]]
    elif name == "avdigits":
        import avdigits

        df = avdigits.load(data, out / "avdigits-files")[["image", "audio", "digit", "split"]]
    else:
        from mmfit.data.demo import generate

        m = generate(out / "demo-files", n=1500)
        df = pd.read_csv(m, dtype=str, keep_default_na=False)
        for c in ("scan", "voice_note"):
            df[c] = [str((m.parent / v).resolve()) if v else "" for v in df[c]]
        df = df[["scan", "report", "voice_note", "age", "smoker", "diagnosis"]]
    df.to_csv(path, index=False)
    return path


def overrides(name: str, seed: int) -> list[str]:
    return [f"train.seed={seed}"] + ([] if name == "avdigits" else [f"data.split.seed={seed}"])


def probe(run: Path) -> dict:
    """(a): logistic regression on the frozen features the run's probe member computed (read back
    from the embedding cache) plus its table inputs, C chosen on validation."""
    from sklearn.metrics import accuracy_score, f1_score

    X, y = probe_features(run)
    val_f1, C, lr, sc = logistic_on_val(X, y, (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30, 100))
    pred = lr.predict(sc.transform(X["test"]))
    return {"macro_f1": float(f1_score(y["test"], pred, average="macro")),
            "accuracy": float(accuracy_score(y["test"], pred)), "C": C, "val_macro_f1": float(val_f1)}


def frozen_costs(member: Path) -> dict:
    """The probe member's one pass of its frozen encoders against its epochs: what an epoch would
    cost running them (the pass, plus the first epoch's own work) and what each later epoch costs."""
    lines = [json.loads(x) for x in (member / "metrics.jsonl").read_text().splitlines() if x.strip()]
    frozen = lines[0].get("frozen_outputs", {})
    first = sum(v["seconds"] for v in frozen.values()) + lines[0]["time_s"]
    later = float(np.median([x["time_s"] for x in lines[1:]])) if len(lines) > 1 else float("nan")
    return {"computed_rows": sum(v["computed"] for v in frozen.values()), "first_epoch_s": round(first, 2),
            "later_epoch_s": round(later, 3), "later_over_first": round(later / first, 4), "epochs": len(lines)}


def _test(run: Path) -> dict:
    m = json.loads((run / "eval" / "test.json").read_text())["metrics"]
    return {"macro_f1": m[next(iter(m))]["macro_f1"], "accuracy": m[next(iter(m))]["accuracy"]}


def one(name: str, path: Path, seed: int, limit: float, out: Path, quiet, variant: tuple[str, list] = ("", [])) -> dict:
    """(c), then (a) on the features (c)'s probe member computed. `variant`: (tag, overrides) of a
    variant of (c), run beside it (its run directory and results key carry the tag)."""
    target, ov = TARGETS[name], overrides(name, seed)
    t0 = time.time()
    run_dir = out / f"{name}{variant[0]}-s{seed}-zero-config"
    shutil.rmtree(run_dir, ignore_errors=True)  # left by an interrupted run
    run_c = fit(path, target, limit, run_dir=run_dir, root="/", overrides=ov + variant[1], console=quiet)
    res = {"c": {**_test(run_c), "seconds": round(time.time() - t0, 1),
                 "ensemble": json.loads((run_c / "ensemble.json").read_text())["weights"]}}
    res["c"]["probe_member"] = frozen_costs(run_c / "members" / "probe")
    res["a"] = probe(run_c)
    inputs = [c["column"] for c in json.loads((run_c / "ensemble.json").read_text())["roles"]
              if c["role"] not in ("target", "ignore", "split")]
    groups = {c: [c] for c in inputs if c not in ("age", "smoker")}
    if {"age", "smoker"} <= set(inputs):
        groups["tabular"] = ["age", "smoker"]
    res["groups"], res["b_each"], res["b"] = groups, {}, {"macro_f1": float("nan")}
    return res


def _skipped(run: Path) -> bool:
    return any(run.glob("members/*/skipped.csv"))


def _test_on(run_b: Path, run_c: Path, path: Path, target: str) -> dict:
    """A single-modality model whose modality some rows lack (the demo's report, voice note, age):
    those rows have no input for it, so it trained without them (data.on_error=skip). Scored here
    on (c)'s own test rows, the rows it cannot read predicted as the most common training class,
    what a model that sees nothing can do."""
    from sklearn.metrics import accuracy_score, f1_score

    from mmfit.deploy.predictor import Predictor
    from mmfit.run.loaded import load_run

    loaded = load_run(run_c)
    data, proc = loaded.data(), loaded.pre.targets[target]
    rows = data["test"].rows.numpy()
    train_y = data["train"].targets[target].numpy().astype(int)
    df = pd.read_csv(path, dtype=str, keep_default_na=False).iloc[rows].reset_index(drop=True)
    pred = Predictor.load(run_b).predict(df, root="/", on_error="skip")
    guess = np.full(len(df), proc.classes[np.bincount(train_y).argmax()], dtype=object)
    guess[pred["row"].to_numpy()] = pred[target].to_numpy()
    y = df[target].to_numpy()
    return {"macro_f1": float(f1_score(y, guess, average="macro")), "accuracy": float(accuracy_score(y, guess)),
            "rows_without_it": int(len(df) - len(pred))}


def singles(name: str, path: Path, seed: int, res: dict, single_limit: float, out: Path, quiet, save) -> None:
    """(b): zero-config on each modality alone (the others ignored); saved group by group, and (b) is
    the best of them only once every group has run."""
    target, ov = TARGETS[name], overrides(name, seed)
    inputs = [c for cols in res["groups"].values() for c in cols]
    for g, cols in res["groups"].items():
        if g in res["b_each"]:
            continue
        t1 = time.time()
        shutil.rmtree(out / f"{name}-s{seed}-only-{g}", ignore_errors=True)  # left by an interrupted run
        run_b = fit(path, target, single_limit, columns={c: "ignore" for c in inputs if c not in cols},
                    run_dir=out / f"{name}-s{seed}-only-{g}", root="/", overrides=ov + ["data.on_error=skip"],
                    console=quiet)
        res["b_each"][g] = {**(_test(run_b) if not _skipped(run_b) else
                               _test_on(run_b, out / f"{name}-s{seed}-zero-config", path, target)),
                            "seconds": round(time.time() - t1, 1)}
        save()
    res["b"] = max(res["b_each"].values(), key=lambda r: r["macro_f1"])
    save()


def _commit() -> str:
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=Path(__file__).parent,
                               capture_output=True, text=True).stdout.strip()
        return out + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "?"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path, nargs="?", default=Path("../shared/data"))
    ap.add_argument("--datasets", default="emoji,avdigits,demo")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--time-limit", default="10m")
    ap.add_argument("--single-time-limit", default="5m", help="'none': skip (b)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/mmfit-bench/probe"))
    ap.add_argument("--variant", default="", help="TAG:KEY=VALUE[,KEY=VALUE]: (a) and (c) with these overrides "
                    "for (c) (e.g. norefit:recipe.refit=false), recorded as <data set>+TAG; no (b)")
    ap.add_argument("--remeasure", action="store_true",
                    help="measure (a) and (c) again for these seeds where results.json has them from another "
                         "commit (after a change to the recipe), keeping the (b) measured there, and its commit")
    args = ap.parse_args()
    commit = _commit()
    console, quiet = Console(width=150), Console(quiet=True)
    limit = seconds(args.time_limit)
    single = None if args.single_time_limit == "none" else seconds(args.single_time_limit)
    results = json.loads((args.out / "results.json").read_text()) if (args.out / "results.json").exists() else {}

    def save():
        (args.out / "results.json").write_text(json.dumps(results, indent=2))

    names, seeds = args.datasets.split(","), [int(x) for x in args.seeds.split(",")]
    tag, ovs = (f"+{args.variant.split(':', 1)[0]}", args.variant.split(":", 1)[1].split(",")) if args.variant else ("", [])
    if tag:
        single = None
    paths = {name: manifest(name, args.data.resolve(), args.out) for name in names}
    # (c) and (a) everywhere first, then (b) seed by seed across the data sets: the costly part last
    for name in names:
        for seed in seeds:
            key = f"{name}{tag}/{seed}"
            old = results.get(key)
            if old is None or args.remeasure and old.get("commit") != commit:
                results[key] = one(name, paths[name], seed, limit, args.out / "runs", quiet, (tag, ovs))
                results[key]["commit"] = commit
                if old and len(old.get("b_each", {})) == len(old.get("groups", {"": 0})):  # (b) kept, as measured
                    results[key].update({k: old[k] for k in ("b", "b_each", "groups")},
                                        b_commit=old.get("b_commit") or old.get("commit"))
                save()
                r = results[key]
                console.print(f"{key}: (a) probe {r['a']['macro_f1']:.4f}  (c) zero-config {r['c']['macro_f1']:.4f} "
                              f"in {r['c']['seconds']:.0f}s; probe member: {r['c']['probe_member']}")
    for key, r in results.items():  # (b) runs measured on their own, smaller test set: score them on (c)'s
        for g, v in r.get("b_each", {}).items():
            name, seed = key.split("/")
            run_b = args.out / "runs" / f"{name}-s{seed}-only-{g}"
            if "rows_without_it" not in v and _skipped(run_b):
                v.update(_test_on(run_b, args.out / "runs" / f"{name}-s{seed}-zero-config", paths[name],
                                  TARGETS[name]))
                if len(r["b_each"]) == len(r.get("groups", r["b_each"])):
                    r["b"] = max(r["b_each"].values(), key=lambda x: x["macro_f1"])
                save()
    for seed in seeds if single else ():
        for name in names:
            r = results[f"{name}/{seed}"]
            if "groups" not in r or len(r["b_each"]) < len(r["groups"]):
                r.setdefault("groups", {g: [g] if g != "tabular" else ["age", "smoker"] for g in r["b_each"]})
                r["b_commit"] = commit
                singles(name, paths[name], seed, r, single, args.out / "runs", quiet, save)
                console.print(f"{name}/{seed}: (b) best single {r['b']['macro_f1']:.4f} "
                              f"{ {g: round(v['macro_f1'], 4) for g, v in r['b_each'].items()} }")
    table = Table(title=f"test macro-F1, mean ± sd over seeds; (c) with --time-limit {args.time_limit}")
    for c in ("data set", "seeds", "(a) linear probe", "(b) best single modality", "(c) zero-config",
              "(c) - (a)", "(c) - (b)", "(c) wall s (max)"):
        table.add_column(c, justify="left" if c == "data set" else "right")
    for name in args.datasets.split(","):
        rs = [results[f"{name}{tag}/{seed}"] for seed in seeds if f"{name}{tag}/{seed}" in results]
        if not rs:
            continue
        a, c = ([r[k]["macro_f1"] for r in rs] for k in ("a", "c"))
        withb = [r for r in rs if not np.isnan(r["b"]["macro_f1"])]  # (b) runs last: it may cover fewer seeds
        b, cb = [r["b"]["macro_f1"] for r in withb], [r["c"]["macro_f1"] - r["b"]["macro_f1"] for r in withb]
        table.add_row(name + tag, f"{len(rs)} ({len(withb)} for b)", mean_sd(a), mean_sd(b) if b else "-", mean_sd(c),
                      mean_sd(np.subtract(c, a)), mean_sd(cb) if cb else "-",
                      f"{max(r['c']['seconds'] for r in rs):.0f}")
    console.print(table)
    for key, r in results.items():
        if key.split("/")[0] in [n + tag for n in names] and int(key.split("/")[1]) in seeds:
            console.print(f"{key}: (a), (c) at commit {r.get('commit', '?')}, (b) at {r.get('b_commit', '?')}")
    console.print(f"machine: {machine()}; mmfit {mmfit.__version__}")


if __name__ == "__main__":
    main()
