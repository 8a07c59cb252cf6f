"""Do the demo model's explanations point where the evidence is?

    python benchmarks/explanations.py [--seeds 0,1,2] [--steps 32] [--out /tmp/mmfit-bench/explanations]

Per seed, the demo config trained on `mmfit demo`'s generated clinic (1,500 patients, data seed 0,
train.seed = the seed); on its test rows:
1. Modality ranking: integrated gradients' per-modality attribution (`Predictor.explain`: |sum of
   a modality's attributions|) against per-sample ablation (`Predictor.modality_importance`: how
   far the predicted class's probability drops when the modality is removed). Agreement: the
   modality IG ranks first is the one whose removal moves the prediction most, over the rows with
   two or more modalities present; beside it the rate a random ranking would reach (mean of
   1 / modalities present). IG credits the numbers only (a category is a lookup, with no path to
   integrate), while ablation removes the tabular modality whole (age and smoking).
2. Lesion: on the test rows whose scan has a lesion drawn (the generator's lesions.csv, never a
   model input), the share of the image heat map's absolute attribution inside the lesion's mask
   (the mask resized as the scan is) against the lesion's share of the image's area.
Protocol fixed before any figure was seen: all test rows, 32 integration steps, the demo config
as `mmfit demo` trains it. Prints per seed and mean +- sd over seeds; writes results.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, mean_sd  # noqa: E402

import mmfit  # noqa: E402
from mmfit.api import packaged_config  # noqa: E402
from mmfit.config import load_config  # noqa: E402
from mmfit.data.demo import LESIONS, generate  # noqa: E402


def measure(run: Path, data_dir: Path, steps: int) -> dict:
    pred = mmfit.Predictor.load(run)
    test = pred.data()["test"]
    explained = pred.explain(test, steps=steps)
    ablated = pred.modality_importance(test)
    agree, chance, n_multi = [], [], 0
    for e, a in zip(explained, ablated):
        present = [m for m, v in a.items() if v["present"]]
        if len(present) < 2:
            continue
        n_multi += 1
        ig_top = max(present, key=lambda m: abs(e["modalities"].get(m, {}).get("sum", 0.0)))
        ablation_top = max(present, key=lambda m: a[m]["change"])
        agree.append(ig_top == ablation_top)
        chance.append(1 / len(present))
    manifest = pd.read_csv(data_dir / "manifest.csv", dtype=str, keep_default_na=False)
    lesions = pd.read_csv(data_dir / LESIONS, dtype=str, keep_default_na=False).set_index("patient_id")
    image_col = next(c for c, k in pred.cfg.data.columns.items() if k.role == "image")
    proc = pred.pre.files[image_col]
    inside, area, by_shown = [], [], {}
    for e, row in zip(explained, test.rows.numpy()):
        info = lesions.loc[manifest.iloc[int(row)]["patient_id"]]
        if not info["lesion"] or image_col not in e["maps"]:
            continue
        mask = proc.to_array(Image.open(data_dir / info["lesion"]).convert("L"))[0] > 127
        heat = np.abs(e["maps"][image_col])
        if heat.sum() <= 0 or not mask.any():
            continue
        share = float(heat[mask].sum() / heat.sum())
        inside.append(share)
        area.append(float(mask.mean()))
        by_shown.setdefault(info["shows"], []).append(share / float(mask.mean()))
    return {"rows": len(explained), "rows_multi": n_multi, "agreement": float(np.mean(agree)),
            "chance": float(np.mean(chance)), "lesion_rows": len(inside), "inside": float(np.mean(inside)),
            "area": float(np.mean(area)), "concentration": float(np.mean(inside) / np.mean(area)),
            "concentration_by_shown": {k: float(np.mean(v)) for k, v in sorted(by_shown.items())},
            "test_macro_f1": json.loads((run / "eval" / "test.json").read_text())["metrics"]["diagnosis"]["macro_f1"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--patients", type=int, default=1500)
    ap.add_argument("--out", type=Path, default=Path("/tmp/mmfit-bench/explanations"))
    ap.add_argument("--set", nargs="*", default=[], help="config overrides (a quick check: train.epochs=2)")
    args = ap.parse_args()
    console, quiet = Console(width=150), Console(quiet=True)
    data_dir = args.out / "data"
    if not (data_dir / LESIONS).exists():
        generate(data_dir, n=args.patients)
    res_path = args.out / "results.json"
    results = json.loads(res_path.read_text()) if res_path.exists() else {}
    seeds = [int(s) for s in args.seeds.split(",")]
    for seed in seeds:
        key = str(seed)
        if key not in results:
            run = args.out / "runs" / f"demo-s{seed}"
            if not (run / "eval" / "test.json").exists():
                cfg = load_config(packaged_config("demo"), [f"data.manifest={data_dir / 'manifest.csv'}",
                                                            f"train.seed={seed}", *args.set])
                mmfit.train(cfg, run_dir=run, console=quiet)
            results[key] = measure(run, data_dir, args.steps)
            res_path.write_text(json.dumps(results, indent=2))
        r = results[key]
        console.print(f"seed {seed}: test macro-F1 {r['test_macro_f1']:.4f}; IG's first modality = ablation's "
                      f"{r['agreement']:.4f} of {r['rows_multi']} rows (random ranking {r['chance']:.4f}); "
                      f"attribution inside the lesion {r['inside']:.4f} of {r['lesion_rows']} scans (lesion area "
                      f"{r['area']:.4f}, x{r['concentration']:.1f}); by what the scan shows: "
                      + ", ".join(f"{k} x{v:.1f}" for k, v in r["concentration_by_shown"].items()))
    rs = [results[str(s)] for s in seeds]
    t = Table(title=f"demo explanations on the test split (mean ± sd over seeds {args.seeds}, {args.steps} IG steps)")
    for c in ("test macro-F1", "IG first = ablation first", "random ranking", "attribution inside lesion",
              "lesion area", "concentration"):
        t.add_column(c, justify="right")
    t.add_row(*[mean_sd([r[k] for r in rs]) for k in ("test_macro_f1", "agreement", "chance", "inside", "area",
                                                  "concentration")])
    console.print(t)
    console.print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
