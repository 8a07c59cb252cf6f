"""Shared by the benchmark scripts: train several variants of one config and print a table; the
machine; mean ± sd over seeds; a logistic regression with C chosen on validation."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

import mmfit


def machine() -> str:
    import os

    return f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {platform.python_version()}"


def ten_million(rate: float, unit: str, minutes: bool = False) -> None:
    """Print what 10 M rows take at `rate` rows/s per `unit` (worker, core) on a few cluster sizes:
    arithmetic from a rate measured on one machine."""
    print(f"10 M rows at {rate:.1f} rows/s per {unit}:")
    for n in (16, 64, 256):
        seconds = 10e6 / (rate * n)
        print(f"  {n:4d} {unit}s: " + (f"{seconds / 60:.0f} min" if minutes else f"{seconds / 3600:.1f} h"))


def mean_sd(xs, signed: bool = False) -> str:
    """'mean ± sd' of the figures (the sample sd, ddof=1; 0 for one figure; None left out; '-' for
    none); `signed`: the mean with its sign (a difference)."""
    xs = np.asarray([x for x in xs if x is not None], float)
    if not len(xs):
        return "-"
    return f"{xs.mean():{'+' if signed else ''}.4f} ± {xs.std(ddof=1) if len(xs) > 1 else 0.0:.4f}"


def logistic_on_val(X: dict, y: dict, Cs) -> tuple:
    """scikit-learn's logistic regression on X['train'] (standardised on it), C the one among `Cs`
    with the best validation macro-F1 (the first of equals) -> (that macro-F1, C, the model, the scaler)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.preprocessing import StandardScaler

    sc = StandardScaler().fit(X["train"])
    best = None
    for C in Cs:
        lr = LogisticRegression(C=C, max_iter=3000).fit(sc.transform(X["train"]), y["train"])
        v = f1_score(y["val"], lr.predict(sc.transform(X["val"])), average="macro")
        if best is None or v > best[0]:
            best = (v, C, lr)
    return (*best, sc)


def probe_features(run: Path) -> tuple[dict, dict]:
    """The linear probe's inputs per split: the frozen features a zero-config run's probe member
    computed (read back from the embedding cache) and its table as it is (standardised numbers,
    one-hot categories), each modality zero where a row lacks it -> (X, y) by split."""
    from mmfit.recipe.selection import loaded_with_outputs
    from mmfit.run.store import Run

    loaded, splits, frozen = loaded_with_outputs(Run(run / "members" / "probe"))
    task = next(iter(loaded.pre.targets))
    X, y = {}, {}
    for s, data in splits.items():
        b = data.batch(torch.arange(len(data)))
        parts = []
        for m in loaded.pre.modalities:
            x = b.inputs[m]
            if m in frozen:
                f = x["pooled"]
            else:  # the table: standardised numbers and one-hot categories
                tab = loaded.pre.tabular
                cats = [torch.nn.functional.one_hot(x["categories"][:, k].clamp(min=0), len(tab.vocab[c])).float()
                        for k, c in enumerate(tab.categorical)]
                f = torch.cat([x["values"], *cats], 1)
            parts.append(f.float() * b.present[m].float().unsqueeze(1))
        X[s], y[s] = torch.cat(parts, 1).numpy(), b.targets[task].numpy()
    return X, y


def fsdd_with_mnist(data: Path, rng, test_speaker: str = "theo", val_speaker: str = "jackson"):
    """Each FSDD recording with a distinct MNIST test digit of the same class, drawn by `rng`, and its
    split by speaker -> (wav path, digit, speaker, take, MNIST image [28, 28] uint8, split)."""
    import numpy as np

    mnist = np.load(data / "mnist" / "mnist_test.npz")
    x, y = mnist["x"], mnist["y"]
    pools = {d: list(rng.permutation(np.flatnonzero(y == d))) for d in range(10)}
    for wav in sorted((data / "fsdd" / "recordings").glob("*.wav")):
        digit, speaker, take = wav.stem.split("_")
        split = "test" if speaker == test_speaker else "val" if speaker == val_speaker else "train"
        yield wav, digit, speaker, take, x[pools[int(digit)].pop()], split


def run_variants(df, base_cfg: dict, variants: dict[str, dict], out_dir: Path, task: str, console=None) -> dict:
    """variants: name -> {"columns": [...], plus dotted overrides}. Returns name -> test metrics."""
    console = console or Console()
    quiet = Console(quiet=True)
    results = {}
    for name, v in variants.items():
        cfg = json.loads(json.dumps(base_cfg))
        cols = v.get("columns")
        if cols:
            cfg["data"]["columns"] = {c: r for c, r in base_cfg["data"]["columns"].items() if c in cols}
        cfg["train"]["output_dir"] = str(out_dir / "runs")
        cfg["train"]["run_name"] = name
        overrides = v.get("overrides", [])
        t0 = time.time()
        run = mmfit.train(cfg, overrides, df=df, console=quiet)
        wall = time.time() - t0
        res = json.loads((run / "eval" / "test.json").read_text())
        m = res["metrics"][task]
        results[name] = {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "train_s": wall,
                         "best_epoch": res.get("best_epoch"), "run": str(run),
                         "all": {t: {k: v for k, v in mm.items() if isinstance(v, float)}
                                 for t, mm in res["metrics"].items()}}
        console.print(f"{name}: accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}  ({wall:.0f}s)")
    t = Table(title=f"test {task}")
    for c in ("inputs", "accuracy", "macro-F1", "train s"):
        t.add_column(c, justify="left" if c == "inputs" else "right")
    for name, r in results.items():
        t.add_row(name, f"{r['accuracy']:.4f}", f"{r['macro_f1']:.4f}", f"{r['train_s']:.0f}")
    console.print(t)
    console.print(f"machine: {machine()}")
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    return results


def _child(df, cfg: dict, overrides: list, result_path: str) -> None:
    import resource

    t0 = time.time()
    run = mmfit.train(cfg, overrides, df=df, console=Console(quiet=True))
    wall = time.time() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    Path(result_path).write_text(json.dumps({"run": str(run), "train_s": wall, "peak_rss_mb": peak_mb}))


def run_isolated(df, cfg: dict, name: str, out_dir: Path, overrides: list | None = None) -> dict:
    """Train one config in a fresh process (so its peak memory is its own); -> results incl.
    test metrics, ablation, parameter counts, wall time and peak resident memory."""
    import multiprocessing as mp

    cfg = json.loads(json.dumps(cfg))
    cfg["train"]["output_dir"] = str(out_dir / "runs")
    cfg["train"]["run_name"] = name.replace(" ", "_").replace("/", "-")
    result_path = out_dir / f".{cfg['train']['run_name']}.json"
    proc = mp.get_context("spawn").Process(target=_child, args=(df, cfg, overrides or [], str(result_path)))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"variant {name!r} failed (exit code {proc.exitcode})")
    res = json.loads(result_path.read_text())
    run = Path(res["run"])
    res["test"] = json.loads((run / "eval" / "test.json").read_text())
    res["params"] = json.loads((run / "params.json").read_text())
    return res


def emoji_manifest(data: Path, out: Path) -> Path:
    """The emoji data set (image, name, group) as a manifest in `out` (created) -> its path."""
    import emoji

    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "emoji.csv"
    emoji.load(data.resolve())[["image", "text", "group"]].to_csv(manifest, index=False)
    return manifest
