"""Moving digits: a video of a handwritten digit drifting through noise, with the digit spoken on its
sound track -> digit. Video against its sound and against one frame, 3 seeds.

    python benchmarks/video.py ../shared/data [--out /tmp/mmfit-bench/video] [--seeds 0,1,2] [--epochs 15]
    python benchmarks/video.py ../shared/data --zero-config 10m   # zero-config on the clips, first run

Each FSDD recording (3,000; six speakers) becomes one MP4 file (H.264 + AAC, what a phone writes):
eight 40x40 frames of a distinct MNIST test digit of the same class moving along a random straight
line, each frame with its own heavy Gaussian noise (sd 110 on 0-255) and its own randomly placed
16x16 occluding block, so that no single frame shows the digit well and the frames together do;
the recording itself is the sound track. The manifest has one column, `clip`: the video column
reads its frames, and the audio column `clip_audio` (`source: clip`) its sound. Split by speaker as
AV-digits: `theo` test (500), `jackson` validation (500), four speakers train (2,000), so the sound
model meets an unseen voice. From-scratch encoders (frames squashed to 32 px, 4 px patches), 15
epochs at most, patience 5, early stopping on validation macro-F1. (A first protocol, 40 px frames
in 8 px patches, underfit: training loss still 1.66 after 15 epochs, validation macro-F1 0.22; it was
changed on the validation curves, see BENCHMARKS.md.) Each variant and seed is a separately trained
model:

- video (8 frames): frames through the image encoder, attention pooling over time
- one frame (data.video.frames=1: the middle frame, the same file): what pooling over time adds
- sound only (the sound track, the video not read)
- video + sound (fused)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from _common import fsdd_with_mnist, machine  # noqa: E402

FRAMES, SIDE, DIGIT = 8, 40, 28


def clip_frames(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 [FRAMES, SIDE, SIDE, 3]: the digit moving along a random line, fresh noise and occluder per frame."""
    start, end = rng.integers(0, SIDE - DIGIT + 1, 2), rng.integers(0, SIDE - DIGIT + 1, 2)
    out = np.zeros((FRAMES, SIDE, SIDE), np.float32)
    for t in range(FRAMES):
        y, x = np.round(start + (end - start) * t / (FRAMES - 1)).astype(int)
        out[t, y:y + DIGIT, x:x + DIGIT] = digit
        out[t] += rng.normal(0, 110, (SIDE, SIDE))
        r, c = rng.integers(0, SIDE - 16, 2)
        out[t, r:r + 16, c:c + 16] = rng.uniform(0, 255)
    return np.repeat(np.clip(out, 0, 255).astype(np.uint8)[..., None], 3, axis=3)


def build(data: Path, out: Path, seed: int = 0) -> pd.DataFrame:
    from mmfit.data.modalities.video import encode_video

    rng = np.random.default_rng(seed)
    (out / "clips").mkdir(parents=True, exist_ok=True)
    rows = []
    for wav, digit, speaker, take, digit_img, split in fsdd_with_mnist(data, rng):
        frames = clip_frames(digit_img.astype(np.float32), rng)
        name = out / "clips" / f"{digit}_{speaker}_{take}.mp4"
        if not name.exists():
            sound, sr = sf.read(wav, dtype="float32")
            name.write_bytes(encode_video(frames, fps=8, audio=(sound, sr)))
        rows.append({"clip": str(name.resolve()), "digit": digit, "speaker": speaker, "split": split})
    return pd.DataFrame(rows)


def config(epochs: int, seed: int, out: Path) -> dict:
    return {
        "data": {"root": "/", "columns": {"clip": "video", "clip_audio": {"role": "audio", "source": "clip"}},
                 "targets": {"digit": "classification"},
                 "image": {"size": 32, "fit": "squash"}, "video": {"frames": FRAMES},
                 "audio": {"sample_rate": 8000, "seconds": 1.0, "n_mels": 40, "n_fft": 256, "hop_length": 80}},
        "model": {"dim": 96, "encoders": {"clip": {"name": "scratch", "layers": 1, "patch": 4},
                                          "clip_audio": {"name": "scratch", "layers": 2, "patch": 8}}},
        "train": {"epochs": epochs, "batch_size": 32, "patience": 5, "seed": seed,
                  "output_dir": str(out / "runs")},
    }


VARIANTS = {
    "video (8 frames)": (["clip"], []),
    "one frame": (["clip"], ["data.video.frames=1"]),
    "sound only": (["clip_audio"], []),
    "video + sound (fused)": (["clip", "clip_audio"], []),
}


def zero_config(df: pd.DataFrame, out: Path, limit: str) -> None:
    """What a user with these clips types: the CLI, the manifest and the target, a time limit; the
    cache empty, as on a first run (frames decoded, the frozen encoder's pass computed)."""
    import shutil
    import subprocess

    manifest, run, cache = out / "clips.csv", out / "zero-config-run", out / "zero-config-cache"
    df[["clip", "digit", "split"]].to_csv(manifest, index=False)
    shutil.rmtree(run, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    t = time.time()
    cmd = [str(Path(sys.executable).parent / "mmfit"), "train", str(manifest), "--target", "digit",
           "--time-limit", limit, "--run-dir", str(run)]
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env={**os.environ, "MMFIT_CACHE": str(cache)})
    wall = time.time() - t
    m = json.loads((run / "eval" / "test.json").read_text())["metrics"]["digit"]
    used = yaml.safe_load((run / "config.yaml").read_text())["data"]
    print(f"\nzero-config, --time-limit {limit}: wall {wall:.0f}s (the command, start-up included); frames at "
          f"{used['video']['size'] or used['image']['size']} px, {used['video']['frames']} a clip; test macro-F1 "
          f"{m['macro_f1']:.4f}, accuracy {m['accuracy']:.4f}")
    print(f"machine: {machine()}")


def main():
    import mmfit
    from rich.console import Console

    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path, nargs="?", default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, default=Path("/tmp/mmfit-bench/video"))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--zero-config", metavar="LIMIT", help="instead: `mmfit train clips.csv --target digit "
                    "--time-limit LIMIT` on the clips (a manifest of path, digit, split), with an empty cache")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    df = build(args.data.resolve(), args.out)
    print(f"{len(df)} clips in {time.time() - t0:.0f}s; split sizes {df['split'].value_counts().to_dict()}")
    if args.zero_config:
        return zero_config(df, args.out, args.zero_config)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for seed in map(int, args.seeds.split(",")):
        for name, (cols, overrides) in VARIANTS.items():
            key = f"{name}/{seed}"
            if key in results:
                continue
            cfg = config(args.epochs, seed, args.out)
            cfg["data"]["columns"] = {c: r for c, r in cfg["data"]["columns"].items() if c in cols}
            cfg["model"]["encoders"] = {c: e for c, e in cfg["model"]["encoders"].items() if c in cols}
            cfg["train"]["run_name"] = key.replace(" ", "_").replace("/", "-").replace("(", "").replace(")", "")
            t = time.time()
            run = mmfit.train(cfg, overrides, df=df, console=Console(quiet=True))
            res = json.loads((run / "eval" / "test.json").read_text())
            m = res["metrics"]["digit"]
            results[key] = {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "train_s": time.time() - t,
                            "ablation": res.get("ablation", {})}
            results_path.write_text(json.dumps(results, indent=2))
            print(f"{key}: accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}  ({time.time() - t:.0f}s)",
                  flush=True)
    seeds = list(map(int, args.seeds.split(",")))
    print(f"\ntest macro-F1 (unseen speaker theo, 500 clips), mean ± sd over seeds {seeds}")
    print("| inputs | test macro-F1 | test accuracy | per seed (macro-F1) | train s (mean) |")
    print("|---|---:|---:|---|---:|")
    f1 = {}
    for name in VARIANTS:
        rs = [results[f"{name}/{s}"] for s in seeds]
        f1[name] = np.array([r["macro_f1"] for r in rs])
        acc = np.array([r["accuracy"] for r in rs])
        print(f"| {name} | {f1[name].mean():.4f} ± {f1[name].std(ddof=1):.4f} | {acc.mean():.4f} ± "
              f"{acc.std(ddof=1):.4f} | {', '.join(f'{v:.3f}' for v in f1[name])} | "
              f"{np.mean([r['train_s'] for r in rs]):.0f} |")
    fused = f1["video + sound (fused)"]
    for other in ("video (8 frames)", "sound only"):
        d = fused - f1[other]
        print(f"fused - {other}: {d.mean():+.4f} ± {d.std(ddof=1):.4f} (per seed {', '.join(f'{v:+.3f}' for v in d)})")
    d = f1["video (8 frames)"] - f1["one frame"]
    print(f"8 frames - one frame: {d.mean():+.4f} ± {d.std(ddof=1):.4f} (per seed {', '.join(f'{v:+.3f}' for v in d)})")
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
