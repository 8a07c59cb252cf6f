"""Behaviour unchanged across a restructuring: one zero-config run on the demo's generated clinic,
without a time limit (so every member trains for its planned epochs, whatever the machine's speed),
its test metrics and the ensemble's weights printed in full, with a digest of both.

    python benchmarks/same_metrics.py --out /tmp/same-new
    PYTHONPATH=/path/to/old/checkout/src python benchmarks/same_metrics.py --out /tmp/same-old
    python benchmarks/same_metrics.py --run /tmp/same-old/run      # a finished run's figures again
    python benchmarks/same_metrics.py --compare RUN_OLD RUN_NEW    # two runs of one fixed config

Run it under each commit (the old one through PYTHONPATH, on the same machine); the two digests are
equal when every figure is the same to the last digit (the run's own path, which test.json records,
is left out of the digest).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="a folder for the data, the cache and the run (trains)")
    ap.add_argument("--run", type=Path, help="a run this script trained earlier: its figures only")
    ap.add_argument("--rows", type=int, default=240)
    ap.add_argument("--compare", type=Path, nargs=2, metavar=("RUN_A", "RUN_B"),
                    help="two runs of one fixed config (e.g. `mmfit train src/mmfit/configs/demo.yaml` under "
                         "each commit): their evaluations, epoch records and weights, the same or not")
    args = ap.parse_args()
    if args.run:
        return show(args.run)
    if args.compare:
        return compare(*args.compare)
    if not args.out:
        ap.error("give --out (train) or --run (show)")
    torch.set_num_threads(2)
    import mmfit
    from mmfit.data.demo import generate
    from rich.console import Console

    print(f"mmfit from {Path(mmfit.__file__).parent}; {machine()}")
    manifest = generate(args.out / "data", n=args.rows, seed=0)
    run = mmfit.fit(manifest, ["diagnosis"], time_limit=None, run_dir=args.out / "run",
                    overrides={"data.cache_dir": str(args.out / "cache"), "recipe.exclude": ["scratch"]},
                    console=Console(quiet=True))
    show(Path(getattr(run, "path", run)))


def show(run: Path) -> None:
    test = json.loads((run / "eval" / "test.json").read_text())
    test.pop("run", None)  # where the run is, not what it measured
    weights = json.loads((run / "ensemble.json").read_text())["weights"]
    text = json.dumps({"test": test, "weights": weights}, sort_keys=True)
    print(json.dumps(test.get("metrics", test), sort_keys=True, indent=1))
    print("weights:", json.dumps(weights, sort_keys=True))
    print("digest:", hashlib.sha256(text.encode()).hexdigest()[:16])


def compare(a: Path, b: Path) -> None:
    """val/test metrics and ablation, every epoch's record less its timings, the fitted
    preprocessing and every weight: identical or not."""
    from safetensors.torch import load_file

    def read(run: Path, name: str):
        return json.loads((run / name).read_text())

    for split in ("val", "test"):
        ea, eb = read(a, f"eval/{split}.json"), read(b, f"eval/{split}.json")
        for key in ("metrics", "ablation"):
            print(f"{split} {key}:", "identical" if ea.get(key) == eb.get(key) else "DIFFERENT")
        heads = {t: {k: v for k, v in m.items() if k in ("accuracy", "macro_f1", "rmse", "r2")}
                 for t, m in ea["metrics"].items()}
        print(f"  {split} (first run):", json.dumps(heads))

    def epochs(run: Path) -> list[dict]:  # a record less what the machine's speed decides
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
        return [{k: v for k, v in r.items() if not k.endswith("_s")} for r in rows]

    ha, hb = epochs(a), epochs(b)
    print(f"epoch records ({len(ha)} and {len(hb)}, times left out):", "identical" if ha == hb else "DIFFERENT")
    print("labels.json:", "identical" if read(a, "labels.json") == read(b, "labels.json") else "DIFFERENT")
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    same = wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    print(f"model.safetensors ({len(wa)} tensors):", "identical" if same else "DIFFERENT")


if __name__ == "__main__":
    main()
