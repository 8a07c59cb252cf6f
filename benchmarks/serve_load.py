"""Load test of `mmfit serve` on loopback: N requests at concurrency C against the demo model,
with dynamic micro-batching and with batch size 1, one after the other in one run.

    python benchmarks/serve_load.py [--run RUN] [--requests 2000] [--concurrency 32]

Without --run the demo model is trained first (the `mmfit demo` config). Each setting starts
its own server process (`mmfit serve`, 127.0.0.1 only); the client sends multipart requests
built from the demo's own rows (CT image, voice note, report text, age), cycling over 64 of
them. Bounded: each phase stops after --max-seconds. Prints p50/p99 latency, requests per
second, errors and the server's mean batch size; writes results.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine  # noqa: E402

import mmfit  # noqa: E402
from mmfit import api  # noqa: E402
from mmfit.config import load_config  # noqa: E402
from mmfit.data.manifest import data_root, read_manifest  # noqa: E402
from mmfit.run.store import Run  # noqa: E402


def payloads(run: Path, n: int = 64) -> list[tuple[dict, dict]]:
    cfg = Run(run).config()  # the run's own data, wherever it was trained from
    df = read_manifest(cfg.data.manifest).tail(n)
    root = data_root(cfg.data)
    out = []
    for _, row in df.iterrows():
        files, data = {}, {}
        for col, c in cfg.data.columns.items():
            v = row[col]
            if v is None or (isinstance(v, float) and v != v) or str(v) == "":
                continue
            if c.role in ("image", "audio"):
                files[col] = (Path(str(v)).name, (root / str(v)).read_bytes())
            else:
                data[col] = str(v)
        out.append((files, data))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def load(url: str, bodies, n: int, concurrency: int, max_seconds: float) -> dict:
    lat, errors, done = [], [], 0
    sem = asyncio.Semaphore(concurrency)
    t_end = time.perf_counter() + max_seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        async def one(i):
            nonlocal done
            async with sem:
                if time.perf_counter() > t_end:
                    return
                files, data = bodies[i % len(bodies)]
                t0 = time.perf_counter()
                try:
                    r = await client.post("/predict", files=files, data=data)
                    ok = r.status_code == 200
                    if not ok:
                        errors.append(f"{r.status_code}: {r.text[:200]}")
                except httpx.HTTPError as e:
                    ok = False
                    errors.append(repr(e))
                lat.append(time.perf_counter() - t0)
                done += 1

        for i in range(min(concurrency, 16)):  # warm-up, not counted
            files, data = bodies[i % len(bodies)]
            await client.post("/predict", files=files, data=data)
        t0 = time.perf_counter()
        await asyncio.gather(*[one(i) for i in range(n)])
        wall = time.perf_counter() - t0
        health = (await client.get("/health")).json()
    lat.sort()
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")  # noqa: E731
    return {"requests": done, "errors": len(errors), "error_samples": errors[:3], "wall_s": wall,
            "rps": done / wall if wall else 0.0, "p50_ms": 1000 * q(0.50), "p99_ms": 1000 * q(0.99),
            "mean_ms": 1000 * statistics.fmean(lat) if lat else float("nan"),
            "server_batches": health["batches"], "server_rows": health["rows"]}


@contextlib.contextmanager
def serving(run: Path, extra: list[str], threads: int):
    """`mmfit serve RUN` in its own process on a free loopback port -> (url, process), once /health answers."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "mmfit.cli", "serve", str(run), "--port", str(port), *extra]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {proc.stderr.read()[-2000:]}")
            time.sleep(0.1)
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(30)


def demo_run(out: Path) -> Path:
    """The demo model (the `mmfit demo` config on 1,500 generated patients), trained under `out`."""
    from mmfit.data.demo import generate

    manifest = generate(out / "data", n=1500)
    cfg = load_config(api.packaged_config("demo"), [f"data.manifest={manifest}", f"train.output_dir={out / 'runs'}"])
    return mmfit.train(cfg, console=Console(quiet=True))


def serve_and_load(run: Path, max_batch: int, args, console) -> dict:
    extra = ["--max-batch", str(max_batch), "--max-wait-ms", str(args.max_wait_ms)]
    with serving(run, extra, args.threads) as (url, _):
        res = asyncio.run(load(url, payloads(run), args.requests, args.concurrency, args.max_seconds))
    res["max_batch"] = max_batch
    res["mean_batch"] = res["server_rows"] / max(res["server_batches"], 1)
    console.print(f"max_batch={max_batch}: {json.dumps({k: v for k, v in res.items() if k != 'error_samples'})}")
    if res["errors"]:
        console.print(f"[red]errors[/red]: {res['error_samples']}")
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, default=None, help="a trained run (default: train the demo model)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/mmfit-bench/serve"))
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--max-seconds", type=float, default=300.0, help="per phase")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    console = Console(width=150)
    args.out.mkdir(parents=True, exist_ok=True)
    run = args.run or demo_run(args.out)
    console.print(f"run: {run}; {args.requests} requests at concurrency {args.concurrency}")
    rows = {"micro-batching (max 32, 5 ms)": serve_and_load(run, 32, args, console),
            "batch size 1": serve_and_load(run, 1, args, console)}
    table = Table(title=f"mmfit serve on loopback, {args.requests} requests at concurrency {args.concurrency}")
    for c in ("setting", "requests", "errors", "p50 ms", "p99 ms", "req/s", "mean batch", "throughput ratio"):
        table.add_column(c, justify="left" if c == "setting" else "right")
    base = rows["batch size 1"]["rps"]
    for name, r in rows.items():
        table.add_row(name, str(r["requests"]), str(r["errors"]), f"{r['p50_ms']:.0f}", f"{r['p99_ms']:.0f}",
                      f"{r['rps']:.1f}", f"{r['mean_batch']:.1f}", f"{r['rps'] / base:.2f}x")
    console.print(table)
    console.print(f"machine: {machine()}; server and client on the same machine")
    (args.out / "results.json").write_text(json.dumps({"run": str(run), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
