"""16-bit scans at two levels (issue 36): zero-config with the default window against per-image stretching.

    python benchmarks/window16.py [--rows 200] [--time-limit 2m] [--out /tmp/mmfit-bench/window16]

Two classes of 16-bit grayscale PNGs (48 px): tissue at level 1000 or 2000 (noise sd 40) with a
brighter blob (+600) at a random place; the level is the class, nothing else differs. Under
`data.image.window: per_image` each scan is stretched to its own range, so both classes look alike;
the default (`auto`) is one window for the column, fitted on training images. Prints test accuracy of
`mmfit train MANIFEST --target level --time-limit` for both (seeded 70/15/15 split).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from rich.console import Console

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine  # noqa: E402

from mmfit.api import fit, seconds  # noqa: E402


def make(out: Path, rows: int) -> Path:
    rng = np.random.default_rng(0)
    (out / "scans").mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(rows):
        level = (1000, 2000)[i % 2]
        a = level + rng.normal(0, 40, (48, 48))
        y, x = rng.integers(8, 32, 2)
        a[y:y + 10, x:x + 10] += 600
        Image.fromarray(np.clip(a, 0, 65535).astype(np.uint16)).save(out / "scans" / f"{i}.png")
        records.append({"scan": f"scans/{i}.png", "level": f"L{level}"})
    pd.DataFrame(records).to_csv(out / "manifest.csv", index=False)
    return out / "manifest.csv"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200)
    ap.add_argument("--time-limit", default="2m")
    ap.add_argument("--out", type=Path, default=Path("/tmp/mmfit-bench/window16"))
    args = ap.parse_args()
    manifest = make(args.out, args.rows)
    for window in ("auto", "per_image"):
        shutil.rmtree(args.out / f"run-{window}", ignore_errors=True)
        run = fit(manifest, "level", seconds(args.time_limit), run_dir=args.out / f"run-{window}",
                  overrides=[f"data.image.window={window}", f"data.cache_dir={args.out / 'cache'}"],
                  console=Console(quiet=True))
        m = json.loads((run / "eval" / "test.json").read_text())["metrics"]["level"]
        print(f"data.image.window: {window:9}  test accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}"
              f"  ({m['n']} rows){'  (the default)' if window == 'auto' else ''}")
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
