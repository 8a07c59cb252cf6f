"""Peak memory of training as the manifest grows 10x (data at scale).

    python benchmarks/memory.py [--patients 1000] [--factor 10] [--size 128] [--epochs 1]

Generates the demo data set twice (N and factor x N patients), fills the feature cache with
`mmfit preprocess --workers 2`, then trains the demo config (images at --size px) for --epochs
on each, every step in its own process. For each process it reports the kernel's peak resident
set (VmHWM: everything, mapped file pages included) and the peak of anonymous memory (RssAnon,
sampled every 20 ms: what the process itself allocated). Training runs twice per size: with
the default mapped cache shards (features read per batch) and with `data.in_memory: true`
(every decoded feature loaded into RAM, as before sharding), so the table shows what the
mapping saves. Ratios compare the two sizes within this one run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine  # noqa: E402


def _status() -> dict:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            out[k] = int(v.split()[0]) / 1024  # kB -> MB
    return out


def child(step: str, cfg_path: str, run_dir: str) -> None:
    """Run one step in this process and print its memory peaks as JSON on the last line."""
    peak = {"RssAnon": 0.0, "RssFile": 0.0}
    done = threading.Event()

    def sample():
        while not done.is_set():
            s = _status()
            for k in peak:
                peak[k] = max(peak[k], s.get(k, 0.0))
            time.sleep(0.02)

    threading.Thread(target=sample, daemon=True).start()
    from mmfit import api

    t0 = time.time()
    quiet = Console(quiet=True)
    if step == "preprocess":
        api.preprocess(cfg_path, console=quiet, workers=2)
    else:
        api.train(cfg_path, run_dir=run_dir, console=quiet)
    done.set()
    s = _status()
    import resource

    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the largest worker process
    print(json.dumps({"hwm_mb": s["VmHWM"], "worker_hwm_mb": kids, "anon_peak_mb": max(peak["RssAnon"], s["RssAnon"]),
                      "file_peak_mb": peak["RssFile"], "seconds": time.time() - t0}))


def run_child(step: str, cfg: Path, run_dir: Path) -> dict:
    r = subprocess.run([sys.executable, __file__, "--child", step, str(cfg), str(run_dir)],
                       capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{step} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("/tmp/mmfit-bench/memory"))
    ap.add_argument("--patients", type=int, default=1000)
    ap.add_argument("--factor", type=int, default=10)
    ap.add_argument("--size", type=int, default=128, help="image side in pixels")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--child", nargs=3, metavar=("STEP", "CFG", "RUN"))
    args = ap.parse_args()
    if args.child:
        return child(*args.child)
    from mmfit import api
    from mmfit.data.demo import generate

    console = Console(width=150)
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for n in (args.patients, args.patients * args.factor):
        data = args.out / f"data-{n}"
        manifest = data / "manifest.csv"
        if not manifest.exists():
            t0 = time.time()
            generate(data, n=n)
            console.print(f"generated {n} patients in {time.time() - t0:.0f}s")
        for in_memory in (False, True):
            cfg = yaml.safe_load(api.packaged_config("demo").read_text())
            cfg["data"].update(manifest=str(manifest), cache_dir=str(args.out / "cache"), in_memory=in_memory)
            cfg["data"]["image"]["size"] = args.size
            cfg["model"]["encoders"]["image"]["patch"] = max(8, args.size // 8)  # 64 image tokens at any size
            cfg["train"].update(epochs=args.epochs, output_dir=str(args.out / "runs"))
            path = args.out / f"cfg-{n}-{'memory' if in_memory else 'mapped'}.yaml"
            path.write_text(yaml.safe_dump(cfg))
            if not in_memory:
                pre = run_child("preprocess", path, args.out)
                results.append({"rows": n, "step": "mmfit preprocess --workers 2", **pre})
                console.print(results[-1])
            run = args.out / "runs" / path.stem
            if run.exists():
                import shutil

                shutil.rmtree(run)
            res = run_child("train", path, run)
            results.append({"rows": n, "step": "train, " + ("data.in_memory: true" if in_memory else "mapped shards"),
                            **res})
            console.print(results[-1])
    table = Table(title=f"peak memory, demo at {args.size} px, {args.patients} vs {args.patients * args.factor} "
                        f"patients, {args.epochs} epoch(s)")
    for c in ("step", "rows", "peak RSS MB (VmHWM)", "peak anon MB", "largest worker MB", "seconds"):
        table.add_column(c, justify="left" if c == "step" else "right")
    for r in results:
        table.add_row(r["step"], str(r["rows"]), f"{r['hwm_mb']:.0f}", f"{r['anon_peak_mb']:.0f}",
                      f"{r['worker_hwm_mb']:.0f}" if r["worker_hwm_mb"] else "-", f"{r['seconds']:.0f}")
    console.print(table)
    small = {r["step"]: r for r in results if r["rows"] == args.patients}
    for r in results:
        if r["rows"] != args.patients:
            s = small[r["step"]]
            console.print(f"{r['step']}: {args.factor}x rows -> peak RSS x{r['hwm_mb'] / s['hwm_mb']:.2f}, "
                          f"peak anon x{r['anon_peak_mb'] / s['anon_peak_mb']:.2f}")
    console.print(f"machine: {machine()}")
    (args.out / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
