"""Hostile clients against `mmfit serve`: compressed "bombs" sent all at once, the server's memory
watched, then a normal request.

    python benchmarks/serve_hostile.py [--run RUN] [--concurrency 32]

Without --run the demo model is trained first (benchmarks/serve_load.py's). The server runs in its
own process with its default limits; the client sends --concurrency requests at once, each carrying
one of these files (round robin) beside the demo's text and age:

- flac-59s-8ch-192k: 59 s of silence, 8 channels at 192 kHz (90 M samples; ~100 KB of FLAC);
- flac-2s-8ch-192k: 2 s of silence, 8 channels at 192 kHz (3 M samples, under the limit: decoded only
  as far as the model reads);
- png-20000px: a 20000 x 20000 black grayscale PNG (400 M pixels; ~400 KB);
- png-4900px-rgba: a 4900 x 4900 transparent RGBA PNG (24 M pixels, under the limit: ~96 MB
  decoded, so the in-flight budget lets one or two decode at a time).

The server's resident memory is sampled every 5 ms from before the burst to after it; printed:
the statuses per kind, the peak growth over the idle server, and a normal request's status and
latency right after. Writes results.json.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import psutil
import soundfile as sf
from PIL import Image
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine  # noqa: E402
from serve_load import demo_run, payloads, serving  # noqa: E402


def flac_silence(seconds: float, channels: int, rate: int) -> bytes:
    buf = io.BytesIO()
    block = np.zeros((rate, channels), np.float32)
    with sf.SoundFile(buf, "w", rate, channels, format="FLAC") as f:
        left = int(seconds * rate)
        while left > 0:
            f.write(block[: min(rate, left)])
            left -= rate
    return buf.getvalue()


def png(size: int, mode: str) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (size, size)).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def bombs(image_col: str, audio_col: str) -> dict[str, tuple[str, str, bytes]]:
    return {"flac-59s-8ch-192k": (audio_col, "a.flac", flac_silence(59, 8, 192_000)),
            "flac-2s-8ch-192k": (audio_col, "b.flac", flac_silence(2, 8, 192_000)),
            "png-20000px": (image_col, "c.png", png(20_000, "L")),
            "png-4900px-rgba": (image_col, "d.png", png(4_900, "RGBA"))}


class Sampler(threading.Thread):
    """The peak resident memory of one process, sampled every 5 ms."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.proc, self.peak, self.running = psutil.Process(pid), 0, True

    def run(self):
        while self.running:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.005)


async def burst(url: str, kinds: dict, fields: dict, n: int) -> list[tuple[str, int, str]]:
    names = list(kinds)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=httpx.Limits(max_connections=n)) as client:
        async def one(i):
            name = names[i % len(names)]
            col, fname, data = kinds[name]
            try:
                r = await client.post("/predict", files={col: (fname, data)}, data=fields)
                return name, r.status_code, r.text[:160]
            except httpx.HTTPError as e:
                return name, -1, repr(e)

        return await asyncio.gather(*[one(i) for i in range(n)])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, default=None, help="a trained run (default: train the demo model)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/mmfit-bench/serve"))
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    console = Console(width=150)
    args.out.mkdir(parents=True, exist_ok=True)
    run = args.run or demo_run(args.out)
    normal_files, normal_data = payloads(run, 1)[0]
    image_col = next(c for c, (n, _) in normal_files.items() if n.endswith((".png", ".jpg")))
    audio_col = next(c for c in normal_files if c != image_col)
    kinds = bombs(image_col, audio_col)
    fields = {k: v for k, v in normal_data.items()}
    console.print("bombs: " + ", ".join(f"{k} {len(v[2]) / 1024:.0f} KB" for k, v in kinds.items()))
    with serving(run, [], args.threads) as (url, proc):
        for _ in range(3):  # warm: the idle server's memory after a few normal requests
            httpx.post(url + "/predict", files=normal_files, data=normal_data, timeout=60)
        time.sleep(0.5)
        base = psutil.Process(proc.pid).memory_info().rss
        sampler = Sampler(proc.pid)
        sampler.start()
        t0 = time.perf_counter()
        answers = asyncio.run(burst(url, kinds, fields, args.concurrency))
        wall = time.perf_counter() - t0
        t1 = time.perf_counter()
        after = httpx.post(url + "/predict", files=normal_files, data=normal_data, timeout=60)
        after_ms = 1000 * (time.perf_counter() - t1)
        time.sleep(0.2)
        sampler.running = False
        sampler.join()
        alive = proc.poll() is None
    counts = Counter((name, code) for name, code, _ in answers)
    table = Table(title=f"{args.concurrency} concurrent requests with a bomb each (default limits)")
    for c in ("file", "requests", "statuses", "an answer"):
        table.add_column(c, justify="left" if c in ("file", "statuses", "an answer") else "right")
    for name in kinds:
        mine = [(code, text) for n, code, text in answers if n == name]
        table.add_row(name, str(len(mine)), ", ".join(f"{code} x{k}" for (n, code), k in sorted(counts.items())
                                                     if n == name), mine[0][1][:90])
    console.print(table)
    five = sum(code >= 500 or code < 0 for _, code, _ in answers)
    growth = (sampler.peak - base) / 2**20
    console.print(f"5xx or failed: {five}; server peak memory {sampler.peak / 2**20:.0f} MB, idle {base / 2**20:.0f} "
                  f"MB: growth {growth:.0f} MB; burst answered in {wall:.1f} s; server alive: {alive}")
    console.print(f"a normal request right after: {after.status_code} in {after_ms:.0f} ms")
    console.print(f"machine: {machine()}; server and client on the same machine")
    (args.out / "hostile.json").write_text(json.dumps({
        "run": str(run), "concurrency": args.concurrency, "statuses": {f"{n} {c}": k for (n, c), k in counts.items()},
        "five_xx": five, "peak_growth_mb": growth, "idle_mb": base / 2**20, "burst_s": wall,
        "after_status": after.status_code, "after_ms": after_ms, "alive": alive}, indent=2))


if __name__ == "__main__":
    main()
