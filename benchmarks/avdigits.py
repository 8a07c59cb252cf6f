"""AV-digits: a spoken digit (FSDD) paired with a degraded handwritten digit (MNIST) -> digit.

    python benchmarks/avdigits.py ../shared/data [--out /tmp/mmfit-bench/avdigits] [--epochs 15]

Every FSDD clip is paired with a distinct MNIST test image of the same digit. The image is
weakened (noise and a random occluding block) so neither modality alone is enough. Split by
speaker: one speaker is the test set, one the validation set, four train, so the audio model
must generalise to a new voice. Trains image-only, audio-only and fused; prints test accuracy
and macro-F1 of each.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from _common import fsdd_with_mnist, run_variants  # noqa: E402


def build(data: Path, out: Path, seed: int = 0, test_speaker: str = "theo", val_speaker: str = "jackson") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for wav, digit, speaker, take, digit_img, split in fsdd_with_mnist(data, rng, test_speaker, val_speaker):
        img = digit_img.astype(np.float32)
        img = img + rng.normal(0, 90, img.shape)  # heavy noise
        r, c = rng.integers(0, 15, 2)
        img[r:r + 14, c:c + 14] = rng.uniform(0, 255)  # occlude a quarter of the digit
        name = f"images/{digit}_{speaker}_{take}.png"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "L").save(out / name)
        rows.append({"image": name, "audio": str(wav.resolve()), "digit": digit, "speaker": speaker, "split": split})
    return pd.DataFrame(rows)


def base_config(epochs: int = 15) -> dict:
    return {
        "data": {
            "root": "/",  # audio paths are absolute (the read-only data folder); images are under --out
            "columns": {"image": "image", "audio": "audio"},
            "targets": {"digit": "classification"},
            "image": {"size": 28, "fit": "squash"},
            "audio": {"sample_rate": 8000, "seconds": 1.0, "n_mels": 40, "n_fft": 256, "hop_length": 80},
        },
        "model": {"dim": 96, "encoders": {"image": {"name": "scratch", "layers": 1, "patch": 4},
                                          "audio": {"name": "scratch", "layers": 2, "patch": 8}}},
        "train": {"epochs": epochs, "batch_size": 32, "patience": 5},
    }


def load(data: Path, out: Path) -> pd.DataFrame:
    out.mkdir(parents=True, exist_ok=True)
    df = build(data.resolve(), out)
    df["image"] = [str((out / p).resolve()) for p in df["image"]]
    return df


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path, nargs="?", default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, default=Path("/tmp/mmfit-bench/avdigits"))
    ap.add_argument("--epochs", type=int, default=15)
    args = ap.parse_args()
    df = load(args.data, args.out)
    print(f"{len(df)} pairs; split sizes {df['split'].value_counts().to_dict()}")
    base = base_config(args.epochs)
    variants = {"image only": {"columns": ["image"]}, "audio only": {"columns": ["audio"]},
                "image + audio (fused)": {}}
    run_variants(df, base, variants, args.out, "digit")


if __name__ == "__main__":
    main()
