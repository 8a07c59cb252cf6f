"""Compression table: fp32 eager, int8 dynamic, ONNX fp32, ONNX int8, 50% structured-pruned +
recovery, distilled student -- size on disk, latency at batch 1 and 32, test macro-F1.

    python benchmarks/compress.py ../shared/data --dataset emoji [--teacher RUN]
    python benchmarks/compress.py ../shared/data --dataset demo  [--teacher RUN]

Without --teacher the fp32 model is trained first (emoji: MiniLM + EfficientNet-Lite0 full
fine-tune, 8 epochs, as `benchmarks/finetune.py strategies`; demo: the `mmfit demo` config).
Every variant is made with the CLI's own functions (mmfit.api.prune / quantize / distill /
export), then all are timed in this one process, one after another, with 2 threads: model
forward only (preprocessing excluded), on real test rows, median of repeated calls, ratios
against fp32 eager measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine  # noqa: E402

import mmfit  # noqa: E402
from mmfit import api  # noqa: E402
from mmfit.config import load_config  # noqa: E402


def emoji_teacher(data: Path, out: Path, epochs: int, console) -> Path:
    import emoji

    df = emoji.load(data)
    manifest = out / "emoji.csv"
    df.to_csv(manifest, index=False)
    cfg = emoji.base_config(True, epochs)
    cfg["data"]["manifest"] = str(manifest)
    cfg["train"].update(output_dir=str(out / "runs"), run_name="fp32")
    return mmfit.train(cfg, console=console)


def demo_teacher(out: Path, console) -> Path:
    from mmfit.data.demo import generate

    manifest = generate(out / "data", n=1500)
    cfg = load_config(api.packaged_config("demo"), [f"data.manifest={manifest}",
                                                          f"train.output_dir={out / 'runs'}", "train.run_name=fp32"])
    return mmfit.train(cfg, console=console)


def student_config(dataset: str, out: Path, epochs: int) -> Path:
    if dataset == "emoji":
        # the text carries most of the signal, and only a pretrained text encoder reads it well: the
        # student keeps MiniLM's first 3 of 6 layers and its 30,522 x 384 token table (half its
        # parameters) factorised to rank 64; a small scratch image encoder replaces EfficientNet-Lite0.
        # (Keeping only the training names' tokens, trim_vocab, cost 14 points: 17% of the test
        # tokens never occur in training and would read as unknown.)
        cfg = {"model": {"dim": 128, "encoders": {
            "text": {"name": "minilm", "keep_layers": 3, "embed_rank": 64, "lr": 5e-5},
            "image": {"name": "scratch", "layers": 1, "heads": 4, "patch": 8}}},
               "train": {"epochs": epochs, "batch_size": 32, "patience": 6},
               "distill": {"temperature": 2.0, "alpha": 0.5, "feature_weight": 0.0}}
    else:  # the demo model at half the width
        cfg = {"model": {"dim": 48, "fusion": "concat",
                         "encoders": {m: {"name": "scratch", "layers": 1, "heads": 4, "patch": 8}
                                      for m in ("image", "audio", "text", "tabular")}},
               "loss": {"aux_weight": 0.5}, "train": {"epochs": epochs, "batch_size": 32, "patience": 8,
                                                      "modality_dropout": 0.15},
               "distill": {"temperature": 2.0, "alpha": 0.5, "feature_weight": 0.0}}
    cfg["train"]["output_dir"] = str(out / "runs")
    cfg["train"]["run_name"] = "student"
    path = out / "student.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def latency(pred, batch, reps: int) -> float:
    """Median seconds of one forward pass on `batch` (after two warm-up calls)."""
    model = pred.model
    ts = []
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=pred.precision == "bf16"):
        for i in range(reps + 2):
            t0 = time.perf_counter()
            model(batch.inputs, batch.present)
            if i >= 2:
                ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path, nargs="?", default=Path("../shared/data"))
    ap.add_argument("--dataset", choices=["emoji", "demo"], default="emoji")
    ap.add_argument("--teacher", type=Path, default=None, help="an fp32 run to start from (else trained here)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--epochs", type=int, default=8, help="teacher epochs (emoji)")
    ap.add_argument("--recovery-epochs", type=int, default=2)
    ap.add_argument("--student-epochs", type=int, default=None, help="default: emoji 10, demo 40")
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(2)
    console, quiet = Console(width=150), Console(quiet=True)
    out = args.out or Path(f"/tmp/mmfit-bench/compress-{args.dataset}")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)

    t0 = time.time()
    if args.teacher:
        base = out / "runs" / "fp32"
        shutil.copytree(args.teacher, base, ignore=shutil.ignore_patterns("checkpoints", "tb"))
        cfg = load_config(base / "config.yaml")
        if args.dataset == "emoji":  # the same rows as a CSV in this output folder
            import emoji

            emoji.load(args.data).to_csv(out / "emoji.csv", index=False)
            cfg.data.manifest = str(out / "emoji.csv")
            (base / "config.yaml").write_text(cfg.to_yaml())
    elif args.dataset == "emoji":
        base = emoji_teacher(args.data, out, args.epochs, quiet)
    else:
        base = demo_teacher(out, quiet)
    console.print(f"fp32 run: {base} ({time.time() - t0:.0f}s)")

    runs: dict[str, tuple[Path, str]] = {"fp32 eager": (base, "torch")}
    steps = {}
    for label, fn in [
        ("int8 dynamic (torch)", lambda: api.quantize(base, "dynamic-int8", out / "runs" / "int8", console=quiet)),
        ("ONNX int8", lambda: api.quantize(base, "onnx-int8", out / "runs" / "onnx-int8", console=quiet)),
        ("structured 50% + recovery", lambda: api.prune(base, 0.5, "structured", args.recovery_epochs,
                                                         out / "runs" / "structured50", console=quiet)),
        ("distilled student", lambda: api.distill(base, student_config(args.dataset, out, args.student_epochs or (
            10 if args.dataset == "emoji" else 40)),
                                                  console=quiet)),
    ]:
        t1 = time.time()
        rec = fn()
        steps[label] = rec["steps"][-1]
        runs[label] = (Path(rec["output"]), "onnx" if label.startswith("ONNX") else "torch")
        console.print(f"{label}: {rec['output']} ({time.time() - t1:.0f}s)")
    # the same student trained on the labels alone: what the teacher adds
    t1 = time.time()
    plain = yaml.safe_load((out / "student.yaml").read_text())
    plain.pop("distill")
    plain["data"] = yaml.safe_load((base / "config.yaml").read_text())["data"]
    plain["train"]["run_name"] = "student-no-teacher"
    runs["student without teacher"] = (mmfit.train(plain, console=quiet), "torch")
    console.print(f"student without teacher: {runs['student without teacher'][0]} ({time.time() - t1:.0f}s)")
    exp = api.export(base, console=quiet)
    runs["ONNX fp32"] = (base, "onnx")
    console.print(f"ONNX export parity (max abs logit diff): {exp['max_abs_diff_logits']}")

    from mmfit.evaluation.metrics import primary_score
    from mmfit.run.files import size_mb

    splits = mmfit.Predictor.load(base).data()
    order = ["fp32 eager", "int8 dynamic (torch)", "ONNX fp32", "ONNX int8", "structured 50% + recovery",
             "distilled student", "student without teacher"]
    rows = {}
    for label in order:
        run, backend = runs[label]
        pred = mmfit.Predictor.load(run, backend=backend, threads=2)
        test = splits["test"] if "student" not in label else None
        if test is None:  # the student has its own preprocessing (its own tokenizer)
            test = pred.data()["test"]
        b1, b32 = test.batch(torch.arange(1)), test.batch(torch.arange(min(32, len(test))))
        weights = run / ("model.onnx" if backend == "onnx" else "model.safetensors")
        score = primary_score(pred.split_metrics("test"))
        rows[label] = {"size_mb": size_mb(weights), "b1_ms": 1000 * latency(pred, b1, args.reps * 3),
                       "b32_ms": 1000 * latency(pred, b32, args.reps), "macro_f1": score,
                       "params": steps.get(label, {}).get("params")}
        console.print(f"{label}: {rows[label]}")
    f0 = rows["fp32 eager"]
    table = Table(title=f"compression on {args.dataset} (test macro-F1 of the first task)")
    for c in ("variant", "size MB", "smaller", "b1 ms", "b1 speed-up", "b32 ms", "b32 speed-up", "macro-F1", "Δ F1"):
        table.add_column(c, justify="left" if c == "variant" else "right")
    for label, r in rows.items():
        table.add_row(label, f"{r['size_mb']:.1f}", f"{f0['size_mb'] / r['size_mb']:.2f}x", f"{r['b1_ms']:.1f}",
                      f"{f0['b1_ms'] / r['b1_ms']:.2f}x", f"{r['b32_ms']:.1f}", f"{f0['b32_ms'] / r['b32_ms']:.2f}x",
                      f"{r['macro_f1']:.4f}", f"{100 * (r['macro_f1'] - f0['macro_f1']):+.1f} pt")
    console.print(table)
    console.print(f"structured 50%: {json.dumps(steps['structured 50% + recovery'].get('removed'))}; "
                  f"score before recovery {steps['structured 50% + recovery'].get('test_score_before_finetune')}")
    console.print(f"ONNX fp32 parity with PyTorch: max abs logit difference {exp['max_abs_diff']:.2e} "
                  f"({exp['checked_on']}; with each modality missing too)")
    console.print(f"machine: {machine()}; threads 2; total {time.time() - t0:.0f}s")
    (out / "results.json").write_text(json.dumps({"rows": rows, "export": exp, "steps": steps}, indent=2, default=str))


if __name__ == "__main__":
    main()
