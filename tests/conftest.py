"""Tiny generated data sets and configs; no test reads ../shared or the network."""

from __future__ import annotations

import os
from pathlib import Path

# One thread of arithmetic a test process: the tests' models are tiny, so a second thread gains them
# nothing (the same time on 2 cores), and the README's command runs a test process a core
# (pytest -n auto): more threads than cores would only make them wait on each other. Set before
# torch is imported here, and inherited by the processes the tests start (torchrun, Ray, the CLI).
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from PIL import Image

WORDS = {"a": ["red", "round", "small"], "b": ["blue", "square", "large"], "c": ["green", "spiky", "tiny"]}


def make_dataset(root: Path, n: int = 60, seed: int = 0, with_split: bool = False) -> Path:
    """Three classes; image brightness pattern, audio pitch and words all carry the label.
    Files are mixed on purpose: RGBA/grayscale/RGB PNGs of several sizes, mono/stereo WAV and FLAC
    at 8 and 16 kHz."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    (root / "aud").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        c = "abc"[i % 3]
        k = "abc".index(c)
        size = [20, 24, 32][i % 3]
        arr = (rng.random((size, size)) * 60).astype(np.uint8)
        arr[:, k * size // 3:(k + 1) * size // 3] += 150
        mode = ["L", "RGB", "RGBA"][i % 3 if i % 2 else 0]
        im = Image.fromarray(arr, "L").convert(mode)
        im.save(root / "img" / f"{i}.png")
        sr = [8000, 16000][i % 2]
        t = np.arange(int(0.3 * sr)) / sr
        wave = (0.5 * np.sin(2 * np.pi * (200 + 300 * k) * t)).astype(np.float32)
        if i % 4 == 0:
            wave = np.stack([wave, wave], 1)
        ext = "flac" if i % 5 == 0 else "wav"
        sf.write(root / "aud" / f"{i}.{ext}", wave, sr)
        rows.append({
            "id": i,
            "group": f"g{i // 6}",
            "image": f"img/{i}.png",
            "audio": f"aud/{i}.{ext}",
            "text": " ".join(rng.choice(WORDS[c], 3)) + " sample",
            "x1": f"{k + rng.normal(0, 0.3):.3f}",
            "color": ["r", "g", "b"][k] if i % 7 else "",
            "label": c,
            "tags": "|".join(sorted({c, "z"} if i % 2 else {c})),
            "score": f"{k * 2.0 + rng.normal(0, 0.1):.3f}",
        })
    if with_split:
        for i, r in enumerate(rows):
            r["split"] = ["train", "train", "train", "val", "test"][i % 5] if i >= 3 else "train"
    path = root / "manifest.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def make_video_dataset(root: Path, n: int = 36, seed: int = 0) -> Path:
    """Two classes of short clips with a sound track: a bright bar moving right (class 'r', a 300 Hz tone)
    or left ('l', 700 Hz), through noise; only the order of the frames tells the classes apart. Mixed
    files: MP4 (H.264 + AAC) and WebM (VP9 + Opus) of several sizes, and animated GIFs (no sound)."""
    from mmfit.data.modalities.video import encode_video

    rng = np.random.default_rng(seed)
    (root / "vid").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        right = i % 2 == 0
        side, count = [32, 48][i % 2], 10 + i % 3
        frames = (rng.random((count, side, side, 3)) * 60).astype(np.uint8)
        for t in range(count):
            x = int((t if right else count - 1 - t) * (side - 6) / (count - 1))
            frames[t, :, x:x + 6] = 230
        sr = 16000
        wave = 0.4 * np.sin(2 * np.pi * (300 if right else 700) * np.arange(int(1.2 * sr)) / sr)
        if i % 6 == 5:
            name = f"vid/{i}.gif"
            ims = [Image.fromarray(f) for f in frames]
            ims[0].save(root / name, save_all=True, append_images=ims[1:], duration=100)
        else:
            container = "webm" if i % 6 == 3 else "mp4"
            name = f"vid/{i}.{container}"
            (root / name).write_bytes(encode_video(frames, fps=8, audio=(wave, sr), container=container))
        rows.append({"clip": name, "label": "r" if right else "l", "n": f"{rng.normal():.3f}"})
    path = root / "manifest.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def tiny_config(manifest: Path, tmp: Path, **extra) -> dict:
    cfg = {
        "data": {
            "manifest": str(manifest),
            "cache_dir": str(tmp / "cache"),
            "columns": {"image": "image", "audio": "audio", "text": "text", "x1": "numeric", "color": "categorical"},
            "targets": {"label": "classification", "score": {"type": "regression", "weight": 0.5}},
            "split": {"val": 0.2, "test": 0.2, "seed": 0},
            "image": {"size": 16},
            "audio": {"sample_rate": 8000, "seconds": 0.25, "n_mels": 16, "n_fft": 128, "hop_length": 64},
            "text": {"max_length": 12, "vocab_size": 100},
        },
        "model": {"dim": 16, "encoders": {k: {"name": "scratch", "layers": 1, "heads": 2, "patch": 4} for k in
                                          ("image", "audio", "text", "tabular")}},
        "train": {"epochs": 2, "batch_size": 8, "output_dir": str(tmp / "runs"), "patience": 10},
    }
    for key, value in extra.items():
        node = cfg
        parts = key.split("__")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return cfg


def without_dropout(cfg: dict) -> dict:
    """`cfg` with every dropout off (modality, fusion, encoders), so that runs in several processes draw
    no randomness beyond the shared batch order and can be compared step for step with one process."""
    cfg["train"]["modality_dropout"] = 0.0
    cfg["model"]["dropout"] = 0.0
    for enc in cfg["model"]["encoders"].values():
        enc["dropout"] = 0.0
    return cfg


def curve(run: Path) -> tuple[list, list, list]:
    """A run's metrics.jsonl: (epochs, training total loss, validation label/macro_f1), a line an epoch."""
    import json

    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [x["epoch"] for x in lines], [x["train"]["total"] for x in lines], [x["val"]["label/macro_f1"] for x in lines]


@pytest.fixture(scope="session", autouse=True)
def _own_cache(tmp_path_factory):
    """Runs that name no cache folder use one of the session's, not the user's ~/.cache/mmfit: the
    tests neither read what earlier runs left there nor leave anything behind."""
    import os

    before = os.environ.get("MMFIT_CACHE")
    os.environ["MMFIT_CACHE"] = str(tmp_path_factory.mktemp("mmfit-cache"))
    yield
    if before is None:
        os.environ.pop("MMFIT_CACHE", None)
    else:
        os.environ["MMFIT_CACHE"] = before


@pytest.fixture
def dataset(tmp_path) -> Path:
    return make_dataset(tmp_path / "data")


@pytest.fixture
def quiet_console():
    from rich.console import Console

    return Console(quiet=True)


def pytest_collection_modifyitems(config, items):
    """Files with the most slow tests first (each file's own order kept): under the README's `pytest -n
    auto --dist loadfile` each file runs whole in one process, and the long ones starting first leave
    the short ones to fill the end, instead of one process finishing a long file alone."""
    slow: dict = {}
    for item in items:
        slow[item.path] = slow.get(item.path, 0) + (item.get_closest_marker("slow") is not None)
    first = {path: i for i, path in enumerate(dict.fromkeys(item.path for item in items))}
    items.sort(key=lambda item: (-slow[item.path], first[item.path]))
