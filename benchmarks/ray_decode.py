"""Decoding on Ray against the local path: rows/s, per worker, and what 10 M rows would take.

    python benchmarks/ray_decode.py [--rows 1200] [--shard-rows 150] [--workers 1,2]

The demo's generated clinic (--rows patients: a CT scan PNG, a report, a voice note of mixed
formats and rates, numbers) under the demo's fixed config, `mmfit preprocess` into an empty cache
folder each time, in one process on one machine:
1. local, in threads (the default) and in --workers processes;
2. `--backend ray` on a local cluster (ray.init with every CPU), with each --workers count as the
   number of blocks in flight (each block a Ray task of one CPU);
and checks that every run wrote the same cache shards, byte for byte, as the local threads did. A
decoding block uses more than the one CPU its task claims (image and audio decoders run threads), so
the rate is given per CPU core of the machine (the job's rows/s / its cores), and the 10 M-row figure
is arithmetic from the Ray runs' best rate per core: 10e6 / (rows/s per core x cores).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, ten_million  # noqa: E402

from mmfit import api  # noqa: E402
from mmfit.config import load_config  # noqa: E402
from mmfit.data.demo import generate  # noqa: E402

CONFIG = Path(api.__file__).parent / "configs" / "demo.yaml"


def shards(cache: Path) -> dict[str, str]:
    """Every file the decoding wrote, by its hash (the file-hashes index left out: it is a lookup
    table of what was read, not what was decoded)."""
    return {str(f.relative_to(cache)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(cache.rglob("*")) if f.is_file() and "sqlite" not in f.name}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1200)
    ap.add_argument("--shard-rows", type=int, default=150)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--out", type=Path, default=Path("/tmp/mmfit-bench/ray-decode"))
    args = ap.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    manifest = generate(args.out / "data", n=args.rows, seed=0)
    workers = [int(x) for x in args.workers.split(",")]
    print(f"{machine()}; {args.rows} rows, {args.shard_rows} rows a shard")

    def run(name: str, **kw) -> tuple[float, dict]:
        cache = args.out / f"cache-{name}"
        cfg = load_config(CONFIG, [f"data.manifest={manifest}", f"data.cache_dir={cache}",
                                   f"data.shard_rows={args.shard_rows}"])
        t = time.time()
        info = api.preprocess(cfg, console=_quiet(), **kw)
        seconds = time.time() - t
        rows = sum(info[s] for s in ("train", "val", "test"))
        print(f"  {name}: {rows} rows in {seconds:.1f} s")
        return rows / seconds, shards(cache)

    rate, reference = run("threads")
    print(f"local, threads: {rate:.1f} rows/s; {len(reference)} files written")
    for w in workers:
        if w > 1:
            rate, got = run(f"processes-{w}", workers=w)
            print(f"local, {w} processes: {rate:.1f} rows/s; same files: {got == reference}")
    import ray

    t = time.time()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, configure_logging=False)
    print(f"ray.init: {time.time() - t:.1f} s")
    per, cores = {}, os.cpu_count()
    for w in workers:
        rate, got = run(f"ray-{w}", backend="ray", workers=w)
        per[w] = rate / cores
        print(f"ray, {w} task(s) in flight: {rate:.1f} rows/s, {per[w]:.1f} rows/s per core; same files as "
              f"local: {got == reference}")
    ten_million(max(per.values()), "core", minutes=True)


def _quiet():
    from rich.console import Console

    return Console(quiet=True)


if __name__ == "__main__":
    main()
