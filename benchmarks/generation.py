"""Generation on real and generated data: text written from the inputs, against copying.

    python benchmarks/generation.py ../shared/data [--datasets demo,digits] [--seeds 0,1,2]
        [--out /tmp/mmfit-bench/generation]

- demo: the synthetic clinic's report written from the scan and the voice note (and age, smoking);
  split 70/15/15 stratified by diagnosis with seed 0 (benchmarks/pretrain.py's). Baseline: copying
  the most common training report to every test row. ROUGE-L, BLEU-4 and CER on the test split.
- digits: FSDD spoken digits transcribed to their word ("seven") from the audio alone, trained on
  four speakers, tested on the unseen one (AV-digits' split). Baseline: always the most common
  training word. Character error rate and exact match.
- digits-ctc: the same with `decoder: ctc` (characters aligned to the audio encoder's frames, best
  path) instead of the transformer decoder.
From-scratch encoders, a 2-block decoder; protocol fixed before any test score was seen: 30 epochs
at most, patience 6 on the validation ROUGE-L, greedy decoding, lr 1e-3, batch 32. 3 seeds
(training seeds; the split stays). Prints mean +- sd and writes results.json.
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
from _common import machine, mean_sd  # noqa: E402
from pretrain import manifest, model_config  # noqa: E402

import mmfit  # noqa: E402
from mmfit.evaluation.metrics import generation_metrics  # noqa: E402

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def data_and_config(name: str, data: Path, out: Path, seed: int):
    if name == "demo":
        df = manifest("demo", data, out)
        cfg = model_config("demo")
        cfg["data"]["columns"].pop("report")
        cfg["model"]["encoders"].pop("text")
        target, length = "report", 40
    else:
        df = manifest("avdigits", data, out)[["audio", "digit", "split"]].copy()
        df["word"] = [WORDS[int(d)] for d in df["digit"]]
        df = df.drop(columns=["digit"])
        cfg = model_config("avdigits")
        cfg["data"]["columns"] = {"audio": "audio"}
        cfg["model"]["encoders"] = {"audio": cfg["model"]["encoders"]["audio"]}
        target, length = "word", 6
    cfg["data"]["targets"] = {target: {"type": "generation", "max_length": length, "vocab_size": 2000}}
    if name == "digits-ctc":  # max_length counts characters
        cfg["data"]["targets"][target].update(decoder="ctc", max_length=8)
    cfg["data"]["split"] = {"column": "split"}
    cfg["data"]["on_error"] = "skip"  # the demo's few patients without a report have nothing to learn from
    cfg["data"]["cache_dir"] = str(out / "cache")
    cfg["train"] = {"epochs": 30, "patience": 6, "batch_size": 32, "lr": 1e-3, "seed": seed,
                    "output_dir": str(out / "runs")}
    return df, cfg, target


def baseline(run: Path, df, target: str) -> dict:
    """The most common training text, written for every test row; texts read through the run's own
    target vocabulary (lower case, word pieces joined), as the model's references are; rows without
    a text are left out, as training and evaluation leave them out."""
    proc = mmfit.Predictor.load(run).pre.targets[target]
    norm = lambda texts: [proc.reference(r) for r in proc.token_ids([str(t) for t in texts if str(t).strip()])]  # noqa: E731,E501
    train = norm(df[df["split"] == "train"][target])
    common = max(set(train), key=lambda t: (train.count(t), t))
    refs = norm(df[df["split"] == "test"][target])
    return {**generation_metrics(refs, [common] * len(refs)), "text": common}


def with_beam(run: Path, df, target: str, beam: int) -> dict:
    """The trained run's test metrics when it decodes with a beam of `beam` instead of greedily."""
    p = mmfit.Predictor.load(run)
    proc = p.pre.targets[target]
    proc.cfg.beam = beam
    test = df[df["split"] == "test"]
    test = test[[str(t).strip() not in ("", "nan", "None") for t in test[target]]]
    hyps = list(p.predict(test.drop(columns=[target]), root=Path("/"), on_error="skip")[target])
    refs = [proc.reference(r) for r in proc.token_ids([str(t) for t in test[target]])]
    if len(hyps) != len(refs):
        raise RuntimeError(f"{len(refs) - len(hyps)} test rows could not be read")
    return generation_metrics(refs, hyps)


def beams(run: Path, df, target: str) -> dict:
    """Greedy and beam-4 decoding of the same run, both through predict (the same rows)."""
    return {str(b): {k: v for k, v in with_beam(run, df, target, b).items() if k != "examples"} for b in (1, 4)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path, nargs="?", default=Path("../shared/data"))
    ap.add_argument("--datasets", default="demo,digits,digits-ctc")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", type=Path, default=Path("/tmp/mmfit-bench/generation"))
    ap.add_argument("--rescore", action="store_true", help="recompute the baselines of finished runs")
    args = ap.parse_args()
    console, quiet = Console(width=150), Console(quiet=True)
    res_path = args.out / "results.json"
    results = json.loads(res_path.read_text()) if res_path.exists() else {}
    seeds = [int(s) for s in args.seeds.split(",")]
    for name in args.datasets.split(","):
        for seed in seeds:
            key = f"{name}/{seed}"
            if key in results:
                df, _, target = data_and_config(name, args.data.resolve(), args.out, seed)
                if args.rescore:  # the baseline again (the model's figures stay)
                    results[key]["baseline"] = baseline(args.out / "runs" / f"{name}-s{seed}", df, target)
                if "beams" not in results[key] and not name.endswith("ctc"):
                    results[key]["beams"] = beams(args.out / "runs" / f"{name}-s{seed}", df, target)
                res_path.write_text(json.dumps(results, indent=2))
                continue
            df, cfg, target = data_and_config(name, args.data.resolve(), args.out, seed)
            shutil.rmtree(args.out / "runs" / f"{name}-s{seed}", ignore_errors=True)  # an interrupted one
            run = mmfit.train(cfg, df=df, run_dir=args.out / "runs" / f"{name}-s{seed}", console=quiet)
            m = json.loads((run / "eval" / "test.json").read_text())["metrics"][target]
            results[key] = {"model": {k: m[k] for k in ("n", "bleu", "rouge_l", "cer", "exact_match")},
                            "baseline": baseline(run, df, target), "examples": m["examples"][:3]}
            if not name.endswith("ctc"):  # CTC decodes by best path
                results[key]["beams"] = beams(run, df, target)
            console.print(f"{name} seed {seed}: ROUGE-L {m['rouge_l']:.4f} CER {m['cer']:.4f} exact "
                          f"{m['exact_match']:.4f} (baseline ROUGE-L {results[key]['baseline']['rouge_l']:.4f}, "
                          f"CER {results[key]['baseline']['cer']:.4f})")
            res_path.write_text(json.dumps(results, indent=2))
    t = Table(title=f"generation on the test split (mean ± sd over seeds {args.seeds})")
    for c in ("data set", "rows", "ROUGE-L", "BLEU-4", "CER", "exact", "baseline ROUGE-L", "baseline CER",
              "baseline exact"):
        t.add_column(c, justify="left" if c == "data set" else "right")
    for name in args.datasets.split(","):
        rs = [results[f"{name}/{s}"] for s in seeds if f"{name}/{s}" in results]
        if not rs:
            continue
        b = rs[0]["baseline"]
        t.add_row(name, str(rs[0]["model"]["n"]), *[mean_sd([r["model"][k] for r in rs]) for k in
                                                    ("rouge_l", "bleu", "cer", "exact_match")],
                  f"{b['rouge_l']:.4f}", f"{b['cer']:.4f}", f"{b['exact_match']:.4f}")
    console.print(t)
    t = Table(title="the same runs decoded greedily and with a beam of 4 (test split, via predict)")
    for c in ("data set", "ROUGE-L greedy", "ROUGE-L beam 4", "CER greedy", "CER beam 4", "exact greedy",
              "exact beam 4"):
        t.add_column(c, justify="left" if c == "data set" else "right")
    for name in args.datasets.split(","):
        rs = [results[f"{name}/{s}"]["beams"] for s in seeds if "beams" in results.get(f"{name}/{s}", {})]
        if rs:
            t.add_row(name, *[mean_sd([r[b][k] for r in rs]) for k in ("rouge_l", "cer", "exact_match")
                              for b in ("1", "4")])
    console.print(t)
    for name in args.datasets.split(","):
        rs = [results[f"{name}/{s}"] for s in seeds if f"{name}/{s}" in results]
        if rs:
            console.print(f"{name}: baseline text {rs[0]['baseline']['text']!r}; seed {seeds[0]} examples:")
            for e in rs[0]["examples"]:
                console.print(f"  reference: {e['reference']}\n  generated: {e['generated']}")
    console.print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
