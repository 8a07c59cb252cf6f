"""Fine-tuning strategies, augmentation and modality dropout, measured on real data.

    python benchmarks/finetune.py strategies ../shared/data --dataset emoji     [--epochs 8]
    python benchmarks/finetune.py strategies ../shared/data --dataset avdigits  [--epochs 8]
    python benchmarks/finetune.py augment    ../shared/data                     [--epochs 30]
    python benchmarks/finetune.py dropout-demo

`strategies`: the fused model with the packaged pretrained encoders (emoji: MiniLM text +
EfficientNet-Lite0 image; AV-digits: EfficientNet-Lite0 image, and a from-scratch audio encoder,
which has no packaged weights and always trains in full) under full / frozen / lora / bitfit.
Each variant trains in its own process; the table gives trainable parameters (of the whole
model, and of the pretrained encoders the strategy applies to), wall time, peak resident memory
of the training process, and test macro-F1.

`augment`: AV-digits with from-scratch encoders: augmentation off vs on, and modality dropout
off vs on, each with test macro-F1 when one modality is removed at test time.
`dropout-demo`: the same modality-removal drops on the demo's four modalities, modality dropout
0 / 0.15 / 0.3.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, run_isolated  # noqa: E402

STRATEGIES = ["full", "frozen", "lora", "bitfit"]
PRETRAINED = {"minilm", "efficientnet-lite0"}


def strategy_config(dataset: str, data: Path, epochs: int):
    if dataset == "emoji":
        import emoji

        df, cfg, task = emoji.load(data), emoji.base_config(True, epochs), "group"
        cfg["model"]["encoders"]["text"]["lr"] = 5e-5
    else:
        import avdigits

        df = avdigits.load(data, Path("/tmp/mmfit-bench/avdigits"))
        cfg, task = avdigits.base_config(epochs), "digit"
        cfg["data"]["image"] = {"size": 64, "fit": "squash"}  # EfficientNet needs more than 28 px
        cfg["model"]["encoders"]["image"] = {"name": "efficientnet-lite0", "lr": 3e-4}
    return df, cfg, task


def strategies(args, console: Console) -> None:
    out = Path(f"/tmp/mmfit-bench/finetune-{args.dataset}")
    out.mkdir(parents=True, exist_ok=True)
    df, base, task = strategy_config(args.dataset, args.data, args.epochs)
    saved = out / "results.json"
    results = json.loads(saved.read_text()) if saved.exists() and args.only else {}
    for s in args.only or STRATEGIES:
        cfg = json.loads(json.dumps(base))
        for name, enc in cfg["model"]["encoders"].items():
            if enc.get("name") in PRETRAINED:
                enc["finetune"] = {"strategy": s}
                if s in ("lora", "bitfit"):
                    del enc["lr"]  # adapters and biases default to the new-layer rate, train.lr (1e-3)
        shutil.rmtree(out / "runs" / s, ignore_errors=True)
        r = run_isolated(df, cfg, s, out)
        results[s] = r
        m = r["test"]["metrics"][task]
        console.print(f"{s}: macro-F1 {m['macro_f1']:.4f} ({r['train_s']:.0f}s, peak {r['peak_rss_mb']:.0f} MB)")
        saved.write_text(json.dumps(results, indent=2))
    print_table(results, base, task, f"{args.dataset}: fused model, test {task}", console)


def print_table(results: dict, base: dict, task: str, title: str, console: Console) -> None:
    table = Table(title=title)
    for c in ("strategy", "trainable / all params", "of pretrained encoders", "train s", "s/epoch", "peak MB",
              "macro-F1", "vs full"):
        table.add_column(c, justify="left" if c == "strategy" else "right")
    full_f1 = results["full"]["test"]["metrics"][task]["macro_f1"] if "full" in results else float("nan")
    for s in [k for k in STRATEGIES if k in results]:
        r = results[s]
        p = r["params"]
        enc = [p[k] for k in pretrained_modalities(base)]
        ep = sum(v["params"] for v in enc) or 1
        et = sum(v["trainable"] for v in enc)
        f1 = r["test"]["metrics"][task]["macro_f1"]
        epochs = [json.loads(ln)["time_s"] for ln in (Path(r["run"]) / "metrics.jsonl").read_text().splitlines()]
        table.add_row(s, f"{p['trainable'] / 1e6:.3f}M / {p['params'] / 1e6:.2f}M "
                         f"({100 * p['trainable'] / p['params']:.1f}%)",
                      f"{100 * et / ep:.2f}%", f"{r['train_s']:.0f}", f"{statistics.median(epochs):.0f}",
                      f"{r['peak_rss_mb']:.0f}", f"{f1:.4f}", f"{f1 / full_f1:.3f}x")
    console.print(table, width=160)
    console.print(f"machine: {machine()}")


def pretrained_modalities(cfg: dict) -> set[str]:
    return {k for k, e in cfg["model"]["encoders"].items() if e.get("name") in PRETRAINED}


AUGMENT = {
    "image": {"crop": 0.8, "rotate": 10, "noise": 0.05},
    "audio": {"gain_db": 6, "snr_db": 15, "shift": 0.1, "time_masks": 2, "time_mask_width": 10,
              "freq_masks": 2, "freq_mask_width": 6},
}


def augment(args, console: Console) -> None:
    import avdigits

    out = Path("/tmp/mmfit-bench/finetune-augment")
    out.mkdir(parents=True, exist_ok=True)
    df = avdigits.load(args.data, Path("/tmp/mmfit-bench/avdigits"))
    variants = {
        "no augmentation, no modality dropout": {"train.modality_dropout": 0.0},
        "no augmentation, modality dropout 0.3": {"train.modality_dropout": 0.3},
        "augmentation, modality dropout 0.3": {"train.modality_dropout": 0.3, "augment": AUGMENT},
    }
    results = {}
    for name, v in variants.items():
        cfg = avdigits.base_config(args.epochs)
        cfg["train"]["patience"] = 10  # regularised models converge later; the unseen-speaker val F1 is noisy
        cfg["train"]["modality_dropout"] = v["train.modality_dropout"]
        if "augment" in v:
            cfg["augment"] = v["augment"]
        r = run_isolated(df, cfg, name, out)
        results[name] = r
        console.print(f"{name}: macro-F1 {r['test']['metrics']['digit']['macro_f1']:.4f} ({r['train_s']:.0f}s)")
    table = Table(title="AV-digits (from scratch, unseen speaker): test macro-F1")
    for c in ("variant", "both", "without image", "drop", "without audio", "drop", "train s"):
        table.add_column(c, justify="left" if c == "variant" else "right")
    for name, r in results.items():
        t = r["test"]
        both = t["metrics"]["digit"]["macro_f1"]
        wi = t["ablation"]["without_image"]["digit"]["macro_f1"]
        wa = t["ablation"]["without_audio"]["digit"]["macro_f1"]
        table.add_row(name, f"{both:.4f}", f"{wi:.4f}", f"{both - wi:+.4f}", f"{wa:.4f}", f"{both - wa:+.4f}",
                      f"{r['train_s']:.0f}")
    console.print(table, width=160)
    console.print(f"augmentation: {AUGMENT}")
    console.print(f"machine: {machine()}")
    (out / "results.json").write_text(json.dumps(results, indent=2))


def dropout_demo(args, console: Console) -> None:
    """The demo (4 modalities) with modality dropout 0, 0.15 (its default) and 0.3: the drop in test
    macro-F1 when each modality is removed at test time."""
    import yaml

    from mmfit.data.demo import generate

    out = Path("/tmp/mmfit-bench/finetune-dropout-demo")
    out.mkdir(parents=True, exist_ok=True)
    manifest = generate(out / "data", n=1500)
    import pandas as pd

    df = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    base = yaml.safe_load((Path(__file__).parent.parent / "configs" / "demo.yaml").read_text())
    base["data"]["manifest"] = None
    base["data"]["root"] = str(manifest.parent)
    results = {}
    for p in (0.0, 0.15, 0.3):
        cfg = json.loads(json.dumps(base))
        cfg["train"]["modality_dropout"] = p
        results[p] = r = run_isolated(df, cfg, f"md{p}", out)
        console.print(f"modality dropout {p}: macro-F1 {r['test']['metrics']['diagnosis']['macro_f1']:.4f}")
    mods = [k[len("without_"):] for k in results[0.0]["test"]["ablation"] if k.startswith("without_")]
    table = Table(title="demo: test diagnosis macro-F1, and its drop with a modality removed at test time")
    for c in ["modality dropout", "all"] + [f"drop w/o {m}" for m in mods] + ["mean drop"]:
        table.add_column(c, justify="right")
    for p, r in results.items():
        t = r["test"]
        both = t["metrics"]["diagnosis"]["macro_f1"]
        drops = [both - t["ablation"][f"without_{m}"]["diagnosis"]["macro_f1"] for m in mods]
        table.add_row(f"{p}", f"{both:.4f}", *[f"{d:+.4f}" for d in drops], f"{sum(drops) / len(drops):+.4f}")
    console.print(table, width=160)
    console.print(f"machine: {machine()}")
    (out / "results.json").write_text(json.dumps(results, indent=2))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["strategies", "augment", "dropout-demo"])
    ap.add_argument("data", type=Path, nargs="?", default=Path("../shared/data"))
    ap.add_argument("--dataset", choices=["emoji", "avdigits"], default="emoji")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--only", nargs="*", choices=STRATEGIES, help="rerun these strategies, keep the others' results")
    args = ap.parse_args()
    console = Console()
    if args.what == "strategies":
        args.epochs = args.epochs or 8
        strategies(args, console)
    elif args.what == "dropout-demo":
        dropout_demo(args, console)
    else:
        args.epochs = args.epochs or 30
        augment(args, console)


if __name__ == "__main__":
    main()
