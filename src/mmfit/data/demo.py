"""A synthetic clinic, the worked example: CT scan + report + voice note + age/smoking -> diagnosis.

Each patient has a diagnosis (normal, cyst, benign tumour, malignant tumour) and a severity.
Every modality carries only part of the evidence, each through its own noise:
- the scan shows a lesion whose shape, size and texture follow the diagnosis, but in about a
  third of the patients it is non-diagnostic (faint, or mimicking another lesion);
- the report names findings with synonyms, negations ("no evidence of malignancy") and typos,
  but is sometimes vague or describes the wrong kind of lesion, and confuses cyst with nodule;
- the voice note (a pitch contour) tells only "reassuring" vs "concerning", and not always right;
- age and smoking history shift the odds.
So no single modality reaches what their fusion does. Files are deliberately messy, as a clinic's
are: PNGs of several sizes in grayscale, RGB and RGBA, and 16-bit ones as a PACS exports them (12
bits of CT); voice notes as WAV and as a phone's AAC .m4a, at 8 and 16 kHz, mono and stereo; some
missing.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

from mmfit.data.modalities.audio import encode_audio

CLASSES = ["normal", "cyst", "benign_tumor", "malignant_tumor"]
PRIORS = [0.3, 0.2, 0.25, 0.25]
SMOKING = [[0.6, 0.3, 0.1], [0.5, 0.3, 0.2], [0.4, 0.35, 0.25], [0.15, 0.35, 0.5]]  # never/former/current

FINDINGS = {
    "normal": ["no focal lesion is seen", "the lungs are clear", "no nodule or mass identified",
               "unremarkable study of the chest", "normal appearance of both lungs"],
    "cyst": ["thin-walled fluid-filled lesion", "simple cyst", "hypodense cystic lesion with a thin rim",
             "lesion of fluid density", "well-circumscribed cystic structure"],
    "benign_tumor": ["well-circumscribed solid nodule", "smooth homogeneous nodule",
                     "nodule with benign calcification", "stable solid nodule with smooth margins",
                     "well-circumscribed lesion"],
    "malignant_tumor": ["spiculated mass", "irregular heterogeneous mass", "mass with irregular margins",
                        "lesion suspicious for malignancy", "infiltrative mass with spiculation"],
}
NEGATIONS = {
    "normal": ["no cyst", "no mass", "no evidence of malignancy"],
    "cyst": ["no solid component", "no evidence of malignancy"],
    "benign_tumor": ["no spiculation", "no evidence of malignancy", "no fluid component"],
    "malignant_tumor": ["no calcification", "no fluid component"],
}
VAGUE = ["limited study due to motion", "clinical correlation recommended", "comparison with prior not available",
         "indeterminate finding", "follow-up imaging suggested"]
LOCATIONS = ["right upper lobe", "right lower lobe", "left upper lobe", "left lower lobe", "lingula", "middle lobe"]


def _typo(word: str, rng) -> str:
    if len(word) > 3 and rng.random() < 0.06:
        i = rng.integers(1, len(word) - 1)
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    return word


def report(shown: str, size_mm: float, rng) -> str:
    parts = [f"CT chest. {rng.choice(['Findings', 'Impression', 'Result'])}:"]
    if shown == "vague":
        parts.append(f"{rng.choice(VAGUE)}.")
        if rng.random() < 0.5:
            parts.append(f"{rng.choice(VAGUE)}.")
    else:
        find = rng.choice(FINDINGS[shown])
        where = "" if shown == "normal" else f" in the {rng.choice(LOCATIONS)} measuring {size_mm:.0f} mm"
        parts.append(f"{find}{where}.")
        parts.append(f"{rng.choice(NEGATIONS[shown])}.")
    if rng.random() < 0.3:
        parts.append(f"{rng.choice(VAGUE)}.")
    text = " ".join(parts)
    return " ".join(_typo(w, rng) for w in text.split())


def scan(shown: str, size: float, faint: bool, rng, px: int = 72) -> tuple[np.ndarray, np.ndarray]:
    """A procedural axial chest slice, float [px, px] in [0, 1], and where its lesion is drawn (bool
    [px, px]; none for a normal scan)."""
    y, x = np.mgrid[-1:1:complex(px), -1:1:complex(px)]
    img = np.zeros((px, px))
    body = (x / 0.9) ** 2 + (y / 0.72) ** 2 < 1
    img[body] = 0.55
    for sx in (-1, 1):  # lungs
        lung = ((x - sx * 0.38) / 0.3) ** 2 + ((y + 0.05) / 0.48) ** 2 < 1
        img[lung] = 0.18
    img[(x / 0.12) ** 2 + ((y - 0.52) / 0.1) ** 2 < 1] = 0.95  # spine
    img[((x - 0.08) / 0.2) ** 2 + ((y - 0.1) / 0.22) ** 2 < 1] = 0.62  # heart
    for k in range(5):  # ribs
        r = 0.78 + 0.02 * k
        ring = np.abs(np.sqrt((x / 0.95) ** 2 + (y / 0.78) ** 2) - r) < 0.015
        img[ring & (np.abs(y) < 0.6)] = 0.85
    lesion = np.zeros((px, px), bool)
    if shown != "normal":
        side = rng.choice([-1, 1])
        cx, cy = side * 0.38 + rng.uniform(-0.1, 0.1), rng.uniform(-0.3, 0.25)
        rr = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
        ang = np.arctan2(y - cy, x - cx)
        r = size
        contrast = 0.3 if faint else 1.0
        if shown == "cyst":  # dark centre, thin bright wall
            wall = np.abs(rr - r) < 0.025
            lesion = (rr < r) | wall
            img = np.where(rr < r, img * (1 - contrast) + 0.05 * contrast, img)
            img = np.where(wall, img * (1 - contrast) + 0.8 * contrast, img)
        elif shown == "benign_tumor":  # solid, smooth, homogeneous
            lesion = rr < r
            img = np.where(lesion, img * (1 - contrast) + 0.75 * contrast, img)
        else:  # spiculated, heterogeneous
            edge = r * (1 + 0.35 * np.sin(7 * ang + rng.uniform(0, 6)) + 0.2 * np.sin(13 * ang))
            tex = 0.6 + 0.3 * rng.random((px, px))
            lesion = rr < edge
            img = np.where(lesion, img * (1 - contrast) + tex * contrast, img)
    img = img + rng.normal(0, 0.08 if not faint else 0.15, img.shape)
    return np.clip(img, 0, 1), lesion


def voice(concerning: bool, rng, sr: int) -> np.ndarray:
    """A 1-second 'voice note': syllables on a pitch contour, rising if concerning, falling if not."""
    n = sr
    t = np.arange(n) / sr
    lo, hi = rng.uniform(110, 160), rng.uniform(260, 340)
    f0 = lo + (hi - lo) * t if concerning else hi - (hi - lo) * t
    phase = 2 * np.pi * np.cumsum(f0) / sr
    wave = sum(np.sin(k * phase) / k for k in (1, 2, 3))
    syll = rng.integers(3, 7)
    env = np.clip(np.sin(np.pi * syll * t + rng.uniform(0, 1)), 0, None) ** 0.5
    wave = wave * env * rng.uniform(0.2, 0.6)
    return (wave + rng.normal(0, 0.05, n)).astype(np.float32)


LESIONS = "lesions.csv"  # beside the manifest: per patient what the scan shows and its lesion's mask


def generate(out_dir: Path, n: int = 1500, seed: int = 0) -> Path:
    """Write images, audio and manifest.csv under out_dir; returns the manifest path. Beside it,
    lesions.csv says per patient what the scan shows and where its lesion is drawn (a mask PNG under
    lesions/), kept out of the manifest so that no model reads it."""
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    (out_dir / "scans").mkdir(parents=True, exist_ok=True)
    (out_dir / "voice").mkdir(parents=True, exist_ok=True)
    (out_dir / "lesions").mkdir(parents=True, exist_ok=True)
    rows, lesions = [], []
    fmt = np.random.default_rng([seed, 17])  # which files are 16-bit or m4a: the content's stream stays as it was
    for i in range(n):
        c = int(rng.choice(4, p=PRIORS))
        dx = CLASSES[c]
        age = rng.normal([38, 46, 55, 68][c], 10)
        smoker = rng.choice(["never", "former", "current"], p=SMOKING[c])
        size = rng.uniform(0.1, 0.17) if c in (1, 2) else rng.uniform(0.15, 0.24)
        severity = [0.5, 2.0, 4.0, 7.5][c] + 12 * (size - 0.1) * (c > 0) + rng.normal(0, 0.6)
        # scan: right in ~65% of patients, else faint or mimicking another diagnosis
        u = rng.random()
        shown_img, faint = (dx, False) if u < 0.65 else (dx, True) if u < 0.8 else (CLASSES[rng.integers(4)], False)
        px = int(rng.choice([64, 72, 96]))
        img, lesion = scan(shown_img, size, faint, rng, px)
        arr = (img * 255).astype(np.uint8)
        if lesion.any():  # where it is drawn, for checking explanations (never a model input)
            Image.fromarray(lesion.astype(np.uint8) * 255, "L").save(out_dir / f"lesions/p{i:05d}.png")
        lesions.append({"patient_id": f"P{i:05d}", "scan": f"scans/p{i:05d}.png", "shows": shown_img,
                        "faint": str(bool(faint)).lower(), "lesion": f"lesions/p{i:05d}.png" if lesion.any() else ""})
        mode = rng.choice(["L", "RGB", "RGBA"], p=[0.6, 0.25, 0.15])
        im = Image.fromarray(arr, "L")
        if mode != "L":
            im = im.convert(mode)
        img_name = f"scans/p{i:05d}.png"
        if fmt.random() < 0.4:  # as a PACS exports it: 12 bits of CT (0..3000) in a 16-bit PNG
            im = Image.fromarray(np.round(img * 3000).astype(np.uint16))
        im.save(out_dir / img_name)
        # report: right in ~60%, vague in ~20%, wrong in ~20%; cyst and benign share phrases
        u = rng.random()
        shown_txt = dx if u < 0.6 else "vague" if u < 0.8 else CLASSES[rng.integers(4)]
        text = report(shown_txt, size * 100, rng)
        # voice: reassuring/concerning, right in 80%
        concerning = (c >= 2) if rng.random() < 0.8 else (c < 2)
        sr = int(rng.choice([8000, 16000], p=[0.7, 0.3]))
        wave = voice(concerning, rng, sr)
        if rng.random() < 0.2:
            wave = np.stack([wave, wave * 0.8], axis=1)  # stereo
        if fmt.random() < 0.4:  # recorded on a phone: AAC in an .m4a
            wav_name = f"voice/p{i:05d}.m4a"
            (out_dir / wav_name).write_bytes(encode_audio(wave, sr, "m4a"))
        else:
            wav_name = f"voice/p{i:05d}.wav"
            sf.write(out_dir / wav_name, wave, sr)
        rows.append({
            "patient_id": f"P{i:05d}",
            "scan": img_name,
            "report": text if rng.random() > 0.04 else "",  # some reports missing
            "voice_note": wav_name if rng.random() > 0.08 else "",  # some voice notes missing
            "age": f"{age:.0f}" if rng.random() > 0.03 else "",
            "smoker": smoker if rng.random() > 0.1 else "",
            "diagnosis": dx,
            "severity": f"{severity:.2f}",
        })
    manifest = out_dir / "manifest.csv"
    for path, table in ((manifest, rows), (out_dir / LESIONS, lesions)):
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(table[0]))
            w.writeheader()
            w.writerows(table)
    return manifest
