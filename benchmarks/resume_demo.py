"""Kill a demo training run with SIGKILL mid-training, resume it, compare with an uninterrupted run.

    python benchmarks/resume_demo.py [--out /tmp/mmfit-bench/resume] [--kill-after 5]

Uses configs/demo.yaml on freshly generated demo data. Both runs use the same seed; the
interrupted one is `mmfit train` in a subprocess, killed once `--kill-after` epochs are logged,
then continued with `mmfit train --resume`. Prints the test macro-F1 of diagnosis of both.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from mmfit.api import packaged_config
from mmfit.data.demo import generate


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("/tmp/mmfit-bench/resume"))
    ap.add_argument("--kill-after", type=int, default=5)
    args = ap.parse_args()
    manifest = generate(args.out / "data")
    cfg = str(packaged_config("demo"))
    common = [f"data.manifest={manifest}", f"train.output_dir={args.out / 'runs'}"]
    mmfit = [sys.executable, "-m", "mmfit.cli"]
    ref, killed = args.out / "runs" / "uninterrupted", args.out / "runs" / "killed"
    for r in (ref, killed):  # a rerun starts both runs afresh
        shutil.rmtree(r, ignore_errors=True)
    subprocess.run(mmfit + ["train", cfg, *common, "--run-dir", str(ref)], check=True, stdout=subprocess.DEVNULL)
    proc = subprocess.Popen(mmfit + ["train", cfg, *common, "--run-dir", str(killed)], stdout=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    metrics = killed / "metrics.jsonl"
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= args.kill_after):
        if proc.poll() is not None:
            raise SystemExit("training ended before it was killed")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(metrics.read_text().splitlines())
    print(f"killed with SIGKILL after {done} epochs logged (exit {proc.returncode})")
    subprocess.run(mmfit + ["train", "--resume", str(killed)], check=True, stdout=subprocess.DEVNULL)
    f = [json.loads((r / "eval" / "test.json").read_text())["metrics"]["diagnosis"]["macro_f1"] for r in (ref, killed)]
    print(f"test macro-F1 of diagnosis: uninterrupted {f[0]:.4f}, killed + resumed {f[1]:.4f}, "
          f"difference {abs(f[0] - f[1]):.4f}")


if __name__ == "__main__":
    main()
