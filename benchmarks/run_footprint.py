"""What a run leaves on disk, and what an epoch costs beyond training (validation, and writing the
checkpoint and the best weights), from the files the run wrote.

    python benchmarks/run_footprint.py RUN [RUN ...]

For each run (an ordinary one, or an ensemble from mmfit.fit / mmfit demo, whose members are runs
too): its size on disk, per member and for the shared frozen tensors, and for each run that trained
by epochs the median of (an epoch's time - its training part) over its epochs, from metrics.jsonl.
Compare two commits by running the same job (e.g. `mmfit demo`) under each and this on both.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine  # noqa: E402


def size_mb(path: Path) -> float:
    if path.is_file():
        return path.stat().st_size / 1e6
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def epoch_overhead(run: Path) -> tuple[int, float] | None:
    """(epochs, median seconds an epoch spent outside training) or None (no epochs)."""
    f = run / "metrics.jsonl"
    if not f.exists():
        return None
    lines = [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
    extra = [r["time_s"] - r["train_s"] for r in lines if r.get("train_s")]
    return (len(lines), statistics.median(extra)) if extra else None


def report(run: Path) -> None:
    print(f"{run}: {size_mb(run):.1f} MB on disk")
    members = run / "members"
    parts = [run] if not members.is_dir() else sorted(members.iterdir())
    for part in parts:
        what = part.name if part != run else "(the run)"
        line = f"  {what:<40} {size_mb(part):8.1f} MB"
        over = epoch_overhead(part) if part.is_dir() else None
        if over:
            line += f"   {over[0]} epochs, {over[1]:.3f} s an epoch outside training (median)"
        print(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    args = ap.parse_args()
    print(machine())
    for run in args.runs:
        report(run)


if __name__ == "__main__":
    main()
