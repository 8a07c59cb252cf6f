"""`mmfit robustness RUN`: the headline metric under corruptions, attacks and missing modalities.

- Corruptions happen to the data as a worse source would make it, before the run's own
  preprocessing reads it: image files (gaussian noise, blur, occlusion, JPEG), videos (noise, blur,
  occlusion on every frame), audio files (white
  noise at an SNR of 20 / 10 / 0 dB, clipping, resampling down and back), texts (typos, word
  dropout), table cells (noise in units of the column's training spread, missing cells); three
  severities each. Files are corrupted at their own resolution and rate and handed over as bytes.
- Attacks: FGSM and PGD (models/adversarial.py) on every image, audio and text input at once,
  at epsilons of 1/4 .. 2 times the defaults (image 0.03 in pixel units, log-mel 0.5, text 0.05 of
  the token-embedding norm), with the true targets (white box).
- Each modality removed (marked absent, as in data without it).
Deterministic under `seed`. Writes RUN/eval/robustness.json and robustness.png.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd
import soundfile as sf
import torch
from PIL import Image, ImageFilter

from mmfit.data.manifest import PathResolver, data_root, file_cell, is_missing, read_manifest, with_sources
from mmfit.data.modalities.audio import NoAudioStream, read_audio
from mmfit.data.modalities.tabular import parse_number
from mmfit.evaluation.predict import metrics_from_predictions, predict_data
from mmfit.tasks import kind_of_metrics

SEVERITIES = (1, 2, 3)
EPSILON_SCALES = (0.25, 0.5, 1.0, 2.0)


# ------------------------------------------------------------------ corruptions of one value
def _image(fn: Callable[[Image.Image, int, np.random.Generator], Image.Image], fmt: str = "PNG", quality=None):
    def corrupt(data: bytes, s: int, rng: np.random.Generator) -> bytes:
        img = Image.open(io.BytesIO(data))
        img.load()
        img = img.convert("RGBA" if "A" in img.getbands() else "RGB")
        out = fn(img, s, rng)
        buf = io.BytesIO()
        if fmt == "JPEG":
            out.convert("RGB").save(buf, format="JPEG", quality=quality(s))
        else:
            out.save(buf, format="PNG")
        return buf.getvalue()
    return corrupt


def _noise(img, s, rng):
    a = np.asarray(img, dtype=np.float32) / 255
    sigma = (0.04, 0.08, 0.16)[s - 1]
    noisy = a + rng.normal(0, sigma, a.shape).astype(np.float32)
    if a.shape[-1] == 4:
        noisy[..., 3] = a[..., 3]  # the alpha channel stays
    return Image.fromarray((np.clip(noisy, 0, 1) * 255).round().astype(np.uint8), img.mode)


def _blur(img, s, rng):
    return img.filter(ImageFilter.GaussianBlur((1, 2, 4)[s - 1] * min(img.size) / 100))


def _occlude(img, s, rng):
    w, h = img.size
    share = (0.1, 0.25, 0.5)[s - 1]
    side_w, side_h = max(1, round(w * share ** 0.5)), max(1, round(h * share ** 0.5))
    x, y = int(rng.integers(0, w - side_w + 1)), int(rng.integers(0, h - side_h + 1))
    out = img.copy()
    out.paste((0, 0, 0, 255) if img.mode == "RGBA" else (0, 0, 0), (x, y, x + side_w, y + side_h))
    return out


def _audio(fn: Callable[[np.ndarray, int, int, np.random.Generator], tuple[np.ndarray, int]]):
    def corrupt(data: bytes, s: int, rng: np.random.Generator) -> bytes:
        try:
            wave, sr = read_audio(data, lambda rate: 2**31 - 1)  # whole (any format mmfit reads)
        except NoAudioStream:  # a video without sound (a sound-track column): nothing to corrupt
            return data
        out, rate = fn(wave, sr, s, rng)
        buf = io.BytesIO()
        sf.write(buf, out.astype(np.float32), rate, format="WAV", subtype="FLOAT")
        return buf.getvalue()
    return corrupt


def _snr(wave, sr, s, rng):
    snr = (20, 10, 0)[s - 1]
    power = float((wave ** 2).mean()) or 1e-8
    return wave + rng.normal(0, (power / 10 ** (snr / 10)) ** 0.5, wave.shape).astype(np.float32), sr


def _clip(wave, sr, s, rng):
    peak = float(np.abs(wave).max()) or 1.0
    c = (0.5, 0.25, 0.1)[s - 1] * peak
    return np.clip(wave, -c, c), sr


def _resample(wave, sr, s, rng):
    from scipy.signal import resample_poly

    k = (2, 4, 8)[s - 1]
    low = resample_poly(wave, 1, k, axis=0)
    return resample_poly(low, k, 1, axis=0)[: len(wave)], sr


def _typos(text: str, s: int, rng) -> str:
    rate = (0.02, 0.05, 0.1)[s - 1]
    out = []
    letters = "abcdefghijklmnopqrstuvwxyz"
    chars = list(text)
    i = 0
    while i < len(chars):
        c = chars[i]
        if c.isalpha() and rng.random() < rate:
            op = int(rng.integers(0, 4))
            if op == 0:  # deleted
                pass
            elif op == 1:  # replaced
                out.append(letters[int(rng.integers(0, 26))])
            elif op == 2:  # doubled
                out += [c, c]
            elif i + 1 < len(chars):  # swapped with the next
                out += [chars[i + 1], c]
                i += 1
            else:
                out.append(c)
        else:
            out.append(c)
        i += 1
    return "".join(out)


def _word_dropout(text: str, s: int, rng) -> str:
    words = text.split()
    keep = [w for w in words if rng.random() >= (0.1, 0.2, 0.4)[s - 1]]
    return " ".join(keep or words[:1])


def _video(fn: Callable[[Image.Image, int, np.random.Generator], Image.Image]):
    """A clip's every frame through an image corruption (one draw per clip: an occluder stays put), as a
    lossless animated PNG (its sound track, if any, is read from the original: robustness pins it).
    A DICOM volume is left as it is."""
    def corrupt(data: bytes, s: int, rng: np.random.Generator) -> bytes:
        from mmfit.data.modalities.image import is_dicom
        from mmfit.data.modalities.video import all_frames

        if is_dicom(data):
            return data
        seed = int(rng.integers(0, 2**31 - 1))
        frames = [fn(f.convert("RGB"), s, np.random.default_rng(seed)) for f in all_frames(data)]
        buf = io.BytesIO()
        frames[0].save(buf, format="PNG", save_all=True, append_images=frames[1:])
        return buf.getvalue()
    return corrupt


FILE_CORRUPTIONS = {
    "image": {"gaussian_noise": _image(_noise), "blur": _image(_blur), "occlusion": _image(_occlude),
              "jpeg": _image(lambda img, s, rng: img, "JPEG", lambda s: (30, 15, 5)[s - 1])},
    "audio": {"noise_snr": _audio(_snr), "clipping": _audio(_clip), "resampling": _audio(_resample)},
    "video": {"gaussian_noise": _video(_noise), "blur": _video(_blur), "occlusion": _video(_occlude)},
}
TEXT_CORRUPTIONS = {"typos": _typos, "word_dropout": _word_dropout}


# ------------------------------------------------------------------ corrupting the data
def corrupted(df: pd.DataFrame, cfg, pre, column: str, name: str, s: int, seed: int,
              root: Path) -> pd.DataFrame:
    """A copy of `df` with one column corrupted at severity `s` (files as bytes)."""
    role = cfg.data.columns[column].role
    rng = np.random.default_rng([seed, s, sum(map(ord, column + name))])
    out = with_sources(df.copy(), cfg.data)  # a video's sound track keeps reading the clean video
    vals = out[column].tolist()
    missing = lambda v: is_missing(v, cfg.data.na_values)  # noqa: E731
    if role in FILE_CORRUPTIONS:
        fn, resolver = FILE_CORRUPTIONS[role][name], PathResolver(root)
        for i, v in enumerate(vals):
            v = file_cell(v)  # a path, or the file itself held in the cell
            if isinstance(v, bytes):
                vals[i] = fn(v, s, rng)
            elif not missing(v):
                path, reason = resolver.resolve(str(v))
                vals[i] = fn(path.read_bytes(), s, rng) if path is not None and path.is_file() else v
    elif role == "text":
        vals = [v if missing(v) else TEXT_CORRUPTIONS[name](str(v), s, rng) for v in vals]
    elif name == "missing":
        vals = [None if rng.random() < (0.1, 0.25, 0.5)[s - 1] else v for v in vals]
    else:  # noise on a number, in units of its training spread
        sd = pre.tabular.stats[column]["std"] * (0.1, 0.25, 0.5)[s - 1]
        vals = [v if missing(v) else _number(v) + float(rng.normal(0, sd)) for v in vals]
    out[column] = pd.Series(vals, index=out.index, dtype=object)
    return out


def _number(v) -> float:
    x = parse_number(v)[0]
    return float("nan") if x is None else x


def corruption_plan(cfg) -> list[tuple[str, str]]:
    """(column, corruption) pairs for the run's inputs."""
    plan = []
    for col, c in cfg.data.columns.items():
        if c.role in FILE_CORRUPTIONS:
            plan += [(col, n) for n in FILE_CORRUPTIONS[c.role]]
        elif c.role == "text":
            plan += [(col, n) for n in TEXT_CORRUPTIONS]
        elif c.role == "numeric":
            plan += [(col, "noise"), (col, "missing")]
        elif c.role in ("categorical", "datetime", "vector"):
            plan.append((col, "missing"))
    return plan


# ------------------------------------------------------------------ the harness
def headline(metrics: dict, task: str) -> Optional[float]:
    m = metrics.get(task)
    return None if m is None else m.get(kind_of_metrics(m).metric)


def robustness(pred, split: str = "test", data: Optional[pd.DataFrame] = None, root: Optional[Path] = None,
               seed: int = 0, attacks: bool = True, log: Callable = print) -> dict:
    """-> {"task", "metric", "clean", "corruptions", "attacks", "without", "rows", "seed"}."""
    from mmfit.config import AdversarialConfig, modality_kinds
    from mmfit.evaluation.attribution import explainable
    from mmfit.models.adversarial import EPSILON, Attack
    from mmfit.models.losses import total_loss

    cfg, pre = pred.cfg, pred.pre
    if data is None:
        rows = pred.data()[split].rows.numpy()
        data = read_manifest(Path(cfg.data.manifest)).iloc[rows].reset_index(drop=True)
        root = data_root(cfg.data)
    root = Path(root or Path.cwd())
    task = next(t for t, p in pre.targets.items() if p.kind.per_row)
    clean_data, _ = pre.transform(data, root, on_error="raise", log=lambda *_: None)

    def metrics(d, drop=(), forward=None) -> dict:
        preds = predict_data(pred.model, d, pre, 64, pred.device, drop=drop, precision=pred.precision, forward=forward)
        return metrics_from_predictions(preds, pre)

    def score(d, drop=(), forward=None) -> Optional[float]:
        return headline(metrics(d, drop, forward), task)

    first = metrics(clean_data)[task]  # predicted once: the clean score and which metric it is
    key = kind_of_metrics(first).metric
    clean = first[key]
    log(f"{task} {key} on {len(clean_data)} rows: clean {clean:.4f}")
    out = {"task": task, "metric": key, "clean": clean, "rows": len(clean_data), "seed": seed,
           "corruptions": {}, "attacks": {}, "without": {}}
    for col, name in corruption_plan(cfg):
        res = {}
        for s in SEVERITIES:
            d, _ = pre.transform(corrupted(data, cfg, pre, col, name, s, seed, root), root, on_error="raise",
                                 log=lambda *_: None)
            res[str(s)] = score(d)
        out["corruptions"][f"{col}/{name}"] = res
        log(f"  {col}/{name}: " + ", ".join(f"{v:.4f}" for v in res.values()))
    for m in pred.model.modalities:
        out["without"][m] = score(clean_data, drop=[m])
    model = pred.model
    kinds = modality_kinds(cfg)
    if attacks and explainable(model) and any(k in ("image", "audio", "video", "text") for k in kinds.values()):
        args = ({t: p.loss_kind for t, p in pre.targets.items()}, {t: 1.0 for t in pre.targets}, 1.0, 0.0)
        for method in ("fgsm", "pgd"):
            res = {}
            for scale in EPSILON_SCALES:
                eps = {k: v * scale for k, v in EPSILON.items()}
                attack = Attack(AdversarialConfig(method=method, steps=5), kinds, epsilon=eps)
                torch.manual_seed(seed)

                def forward(batch, attack=attack):
                    loss_fn = lambda o: total_loss(o, batch, *args)["total"]  # noqa: E731
                    deltas = attack.perturb(model, batch, loss_fn)
                    with attack.applied(model, batch.inputs, dict(deltas)) as inputs:
                        return model(inputs, batch.present)

                res[f"{scale:g}"] = score(clean_data, forward=forward)
            out["attacks"][method] = res
            log(f"  {method} at epsilon x {', '.join(map(str, EPSILON_SCALES))}: "
                + ", ".join(f"{v:.4f}" for v in res.values()))
        out["epsilon"] = {k: [v * s for s in EPSILON_SCALES] for k, v in EPSILON.items()}
    return out


def robustness_figure(result: dict):
    """Metric against severity (each corruption) and against epsilon (each attack), or None."""
    import matplotlib.pyplot as plt

    if not result.get("corruptions") and not result.get("attacks"):
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    for name, res in result["corruptions"].items():
        ax.plot([0, *map(int, res)], [result["clean"], *res.values()], marker="o", label=name)
    ax.set_xlabel("severity (0: clean)")
    ax.set_ylabel(result["metric"])
    ax.set_title(f"{result['task']}: corruptions")
    ax.legend(fontsize=7)
    ax = axes[1]
    for method, res in result.get("attacks", {}).items():
        ax.plot([0, *map(float, res)], [result["clean"], *res.values()], marker="o", label=method)
    ax.set_xlabel("epsilon (x default)")
    ax.set_title(f"{result['task']}: attacks")
    if result.get("attacks"):
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
