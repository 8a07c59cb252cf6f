"""The held-out protocol's data sets (issue 36): four real data sets never used while the recipe was
developed, each written as a plain manifest a user would bring (absolute file paths).

    python benchmarks/heldout_data.py ../shared/data --out /tmp/mmfit-bench/heldout

- digits-text: scikit-learn's bundled digits (UCI optdigits, 1,797 8x8 scans of handwriting in 17
  grey levels) as a 32 px PNG, and the same scan as text, an ASCII rendering (` .:-=+*#%@` by level,
  rows joined by '/'): one digit seen by an image model and read by a text model. Target: digit.
- fsdd-nicolas: the Free Spoken Digit Dataset's recordings (../shared/data/fsdd) with a scan of the
  same digit from scikit-learn's digits, half of it blanked at random (neither alone is enough). Split
  by speaker: `nicolas` test and `george` validation, never scored before (AV-digits scored `theo`
  and selected on `jackson`). Target: digit.
- glyphs: characters of the Basic Multilingual Plane that Debian's DejaVu Sans (fonts-dejavu-core)
  draws, as a 48 px image, with the character's Unicode name as text. Target: its general category
  (Lu, Ll, Lo, Sm, So, Po, Nd, Mn, ...: the eight largest; at most 200 characters each).
- spoken-letters: letters of eight scripts (Latin, Greek, Cyrillic, Armenian, Georgian, Hebrew,
  Arabic, Coptic, as DejaVu draws them) in one of six DejaVu faces at a random size and place; their
  Unicode name without the script's word as text ("SMALL LETTER ALPHA"); that name spoken by
  Debian's espeak-ng in one of five voices at a random speed (16 kHz WAV); and eight numbers measured
  on the drawing (ink, extent, centre, strokes). Target: the script. Image + text + audio + numbers,
  like the data set of issue 36.
Seeds do not change these files; the splits of digits-text, glyphs and spoken-letters are drawn by
the recipe's own seeded split (data.split.seed), fsdd-nicolas's are fixed by speaker.

Round 2 (fixed on 2026-12-07 before any of it was trained on; `heldout.py --round 2`): small data,
the shape of issue 36's own data set (a few hundred rows, classes of very different sizes):
- adwaita-icons: the symbolic icons of GNOME's Adwaita theme (Debian's adwaita-icon-theme), 48 px
  RGBA PNGs (grey on transparent), their name as text with the dashes as spaces and without
  "symbolic" ("network wireless signal good"); right-to-left mirror images left out (the same
  name). Target: the theme's context folder (actions, status, devices, emotes, ui, categories,
  mimetypes, places: every context with at least 15 icons), about 500 rows.
- fsdd-lucas (added the same day, before it was trained on, while adwaita-icons ran): FSDD
  recordings with a half-blanked scan of the same digit, as fsdd-nicolas, but few rows and a voice
  never scored: takes 0-7 of george, jackson, nicolas and theo train (320 rows), yweweler's takes
  0-7 validate (80), lucas's ten takes test (100). Target: digit.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

FONTS = Path("/usr/share/fonts/truetype/dejavu")
LEVELS = " .:-=+*#%@"
TARGETS = {"digits-text": "digit", "fsdd-nicolas": "digit", "glyphs": "category", "spoken-letters": "script"}
ROUND2 = {"adwaita-icons": "context", "fsdd-lucas": "digit"}
EVERY = {**TARGETS, **ROUND2}  # every data set of both rounds -> its target
BY_SPEAKER = ("fsdd-nicolas", "fsdd-lucas")  # split by speaker (a split column): the seed changes training only
ICONS = Path("/usr/share/icons/Adwaita/48x48")


def _font(name: str, size: int):
    path = FONTS / name
    if not path.exists():
        raise SystemExit(f"{path} is missing: apt-get install fonts-dejavu-core fonts-dejavu-extra")
    return ImageFont.truetype(str(path), size)


def _scan_png(x: np.ndarray, path: Path) -> None:
    """An 8x8 scan of 0..16 as a 32 px grayscale PNG (ink dark on white, as on paper)."""
    a = (255 - np.clip(x, 0, 16) * 255 / 16).astype(np.uint8)
    Image.fromarray(a, "L").resize((32, 32), Image.NEAREST).save(path)


def digits_text(out: Path) -> pd.DataFrame:
    from sklearn.datasets import load_digits

    d = load_digits()
    (out / "digits").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (x, y) in enumerate(zip(d.images, d.target)):
        _scan_png(x, out / "digits" / f"{i}.png")
        text = "/".join("".join(LEVELS[min(9, int(v * 10 / 17))] for v in r) for r in x)
        rows.append({"scan": str(out / "digits" / f"{i}.png"), "ascii": text, "digit": str(int(y))})
    return pd.DataFrame(rows)


def fsdd_nicolas(data: Path, out: Path) -> pd.DataFrame:
    return _fsdd_with_scans(data, out, "fsdd-scans", test="nicolas", val="george")


def fsdd_lucas(data: Path, out: Path) -> pd.DataFrame:
    """Round 2: a new voice from few rows. Takes 0-7 of george, jackson, nicolas and theo train (320
    rows), yweweler's takes 0-7 validate (80), lucas's takes 0-9 test (100); scans as fsdd-nicolas's."""
    return _fsdd_with_scans(data, out, "fsdd-lucas-scans", test="lucas", val="yweweler",
                            keep=lambda speaker, take: take < (10 if speaker == "lucas" else 8))


def _fsdd_with_scans(data: Path, out: Path, folder: str, test: str, val: str, keep=None) -> pd.DataFrame:
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(0)
    pools = {k: list(rng.permutation(np.flatnonzero(d.target == k))) for k in range(10)}
    (out / folder).mkdir(parents=True, exist_ok=True)
    rows = []
    for wav in sorted((data / "fsdd" / "recordings").glob("*.wav")):
        digit, speaker, take = wav.stem.split("_")
        if keep is not None and not keep(speaker, int(take)):
            continue
        pool = pools[int(digit)]
        j = pool.pop(0)
        pool.append(j)  # 3,000 clips, 1,797 scans: each scan serves one or two clips
        x = d.images[j].copy()
        side = rng.integers(4)  # blank one half: top, bottom, left or right
        x[(slice(0, 4), slice(4, 8), slice(None), slice(None))[side],
          (slice(None), slice(None), slice(0, 4), slice(4, 8))[side]] = 0
        path = out / folder / f"{wav.stem}.png"
        _scan_png(x, path)
        split = "test" if speaker == test else "val" if speaker == val else "train"
        rows.append({"scan": str(path), "speech": str(wav.resolve()), "digit": digit, "split": split})
    return pd.DataFrame(rows)


def _draws(font, ch: str) -> bool:
    """Whether the font has a glyph for `ch` (not the empty box of a missing one)."""
    try:
        return font.getmask(ch).getbbox() is not None and ord(ch) in _cmap(font)
    except Exception:
        return False


_CMAPS: dict = {}


def _cmap(font) -> set:
    if font.path not in _CMAPS:
        from fontTools.ttLib import TTFont

        _CMAPS[font.path] = set(TTFont(font.path).getBestCmap())
    return _CMAPS[font.path]


def glyphs(out: Path) -> pd.DataFrame:
    font = _font("DejaVuSans.ttf", 36)
    by_cat: dict[str, list[str]] = {}
    for cp in range(0x21, 0x3000):
        ch = chr(cp)
        name = unicodedata.name(ch, "")
        cat = unicodedata.category(ch)
        if name and cat[0] != "C" and cat[0] != "Z" and _draws(font, ch):
            by_cat.setdefault(cat, []).append(ch)
    cats = sorted(by_cat, key=lambda c: -len(by_cat[c]))[:8]
    rng = np.random.default_rng(0)
    (out / "glyphs").mkdir(parents=True, exist_ok=True)
    rows = []
    for cat in cats:
        chars = by_cat[cat]
        for ch in (rng.choice(chars, 200, replace=False) if len(chars) > 200 else chars):
            img = Image.new("L", (48, 48), 255)
            text = ("\u25cc" + ch) if cat.startswith("M") else ch  # a combining mark on a dotted circle
            ImageDraw.Draw(img).text((24, 24), text, font=font, fill=0, anchor="mm")
            path = out / "glyphs" / f"{ord(ch):04x}.png"
            img.save(path)
            rows.append({"glyph": str(path), "name": unicodedata.name(ch), "category": cat})
    return pd.DataFrame(rows)


SCRIPTS = ["LATIN", "GREEK", "CYRILLIC", "ARMENIAN", "GEORGIAN", "HEBREW", "ARABIC", "COPTIC"]
FACES = ["DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "DejaVuSans-Bold.ttf",
         "DejaVuSerif-Bold.ttf", "DejaVuSansCondensed.ttf"]
VOICES = ["en", "en-us", "de", "fr", "es"]


def _measure(img: np.ndarray) -> dict:
    """Eight numbers a practitioner would measure on a drawing: ink, extent, centre, strokes."""
    ink = img < 128
    ys, xs = np.nonzero(ink)
    if not len(xs):
        return {k: "" for k in ("ink", "width", "height", "cx", "cy", "row_strokes", "col_strokes", "holes")}
    rows = ink[int(ys.mean())]
    cols = ink[:, int(xs.mean())]
    from scipy import ndimage

    _, holes = ndimage.label(~ink)
    return {"ink": round(float(ink.mean()), 4), "width": int(xs.max() - xs.min() + 1),
            "height": int(ys.max() - ys.min() + 1), "cx": round(float(xs.mean()), 2), "cy": round(float(ys.mean()), 2),
            "row_strokes": int((np.diff(rows.astype(int)) == 1).sum()),
            "col_strokes": int((np.diff(cols.astype(int)) == 1).sum()), "holes": int(holes - 1)}


def spoken_letters(out: Path, per_script: int = 160) -> pd.DataFrame:
    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is missing: apt-get install espeak-ng")
    base = _font("DejaVuSans.ttf", 36)
    letters: dict[str, list[str]] = {s: [] for s in SCRIPTS}
    for cp in range(0x41, 0x3000):
        ch = chr(cp)
        name = unicodedata.name(ch, "")
        script = name.split(" ")[0]
        if script in letters and " LETTER " in name and unicodedata.category(ch) in ("Lu", "Ll", "Lo") \
                and _draws(base, ch):
            letters[script].append(ch)
    rng = np.random.default_rng(0)
    for d in ("letters", "letters-audio"):
        (out / d).mkdir(parents=True, exist_ok=True)
    rows = []
    for script in SCRIPTS:
        chars = letters[script]
        for k in range(per_script):
            ch = chars[k % len(chars)] if len(chars) >= per_script else chars[rng.integers(len(chars))]
            faces = [f for f in FACES if _draws(_font(f, 36), ch)]  # a face without the glyph would draw a box
            face = faces[rng.integers(len(faces))]
            size = int(rng.integers(18, 34))
            img = Image.new("L", (48, 48), 255)
            ImageDraw.Draw(img).text((24 + int(rng.integers(-6, 7)), 24 + int(rng.integers(-6, 7))), ch,
                                     font=_font(face, size), fill=0, anchor="mm")
            stem = f"{script.lower()}-{k}"
            img.save(out / "letters" / f"{stem}.png")
            name = unicodedata.name(ch).replace(script + " ", "", 1)
            wav = out / "letters-audio" / f"{stem}.wav"
            voice, speed = VOICES[rng.integers(len(VOICES))], int(rng.integers(120, 200))
            words = name.lower().replace("letter ", "")
            subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(wav), words], check=True,
                           capture_output=True)
            rows.append({"letter": str(out / "letters" / f"{stem}.png"), "name": name, "spoken": str(wav),
                         **_measure(np.asarray(img)), "script": script.lower()})
    return pd.DataFrame(rows)


def adwaita_icons(out: Path) -> pd.DataFrame:
    if not ICONS.is_dir():
        raise SystemExit(f"{ICONS} is missing: apt-get install adwaita-icon-theme")
    (out / "icons").mkdir(parents=True, exist_ok=True)
    rows = []
    for folder in sorted(p for p in ICONS.iterdir() if p.is_dir() and p.name != "legacy"):
        for f in sorted(folder.glob("*-symbolic.symbolic.png")):
            stem = f.name[:-len("-symbolic.symbolic.png")]
            if stem.endswith("-rtl"):
                continue
            target = out / "icons" / f"{len(rows):04d}.png"  # the context is in no path
            shutil.copy2(f, target)
            rows.append({"icon": str(target), "name": stem.replace("-", " "), "context": folder.name})
    df = pd.DataFrame(rows)
    counts = df["context"].value_counts()
    return df[df["context"].isin(counts[counts >= 15].index)].reset_index(drop=True)


def build(name: str, data: Path, out: Path) -> Path:
    """The manifest of one data set (built once into `out`) -> its path."""
    path = out / f"{name}.csv"
    if path.exists():
        return path
    out.mkdir(parents=True, exist_ok=True)
    df = {"digits-text": lambda: digits_text(out), "fsdd-nicolas": lambda: fsdd_nicolas(data, out),
          "glyphs": lambda: glyphs(out), "spoken-letters": lambda: spoken_letters(out),
          "adwaita-icons": lambda: adwaita_icons(out), "fsdd-lucas": lambda: fsdd_lucas(data, out)}[name]()
    df.to_csv(path, index=False)
    return path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path, nargs="?", default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, default=Path("/tmp/mmfit-bench/heldout"))
    args = ap.parse_args()
    for name, target in EVERY.items():
        path = build(name, args.data.resolve(), args.out)
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
        counts = df[target].value_counts()
        print(f"{name}: {len(df)} rows, {len(counts)} classes ({counts.min()}-{counts.max()} a class), columns "
              f"{list(df.columns)}: {path}")


if __name__ == "__main__":
    main()
