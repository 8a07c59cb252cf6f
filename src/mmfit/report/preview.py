"""`mmfit augment-preview`: original and augmented samples side by side, before training for hours.

Images are drawn as they are fed to the model; audio as log-mel spectrograms (waveform inputs are
turned into log-mel only for the picture); texts are printed as the tokens the model gets, decoded.
The augmentation is the one the training loop runs (data/augment.py), with the config's settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from mmfit.config import Config, modality_kind
from mmfit.data.augment import Augmenter
from mmfit.data.cache import FeatureCache
from mmfit.data.errors import ErrorLog
from mmfit.data.manifest import data_root, read_manifest
from mmfit.data.prepare import Preprocessor


def preview_batch(cfg: Config, n: int = 6, seed: int = 0):
    """-> (Preprocessor, Batch) of n manifest rows, preprocessed as training would."""
    d = cfg.data
    if not d.manifest:
        raise ValueError("augment-preview needs data.manifest")
    df = read_manifest(d.manifest)
    sample = df.sample(min(n, len(df)), random_state=seed).reset_index(drop=True)
    pre = Preprocessor(cfg)
    errors = ErrorLog("skip")
    cache = FeatureCache(Path(d.cache_dir) if d.cache_dir else None)
    parsed = pre.parse(sample, errors, cache, with_targets=False, root=data_root(d), log=lambda *_: None)
    rows = np.array([i for i in range(len(sample)) if i not in errors.resolve()], dtype=np.int64)
    if len(rows) == 0:
        raise ValueError("none of the sampled rows could be read; run `mmfit validate` first")
    for col, proc in pre.texts.items():  # the vocabulary of the whole text column, as in training
        proc.fit([str(v) for v in df[col].tolist() if not pre._missing(v)] or [""])
    if pre.tabular:
        pre.tabular.fit(parsed.tabular, rows)
    data = pre.encode(parsed, rows)
    return pre, data.batch(torch.arange(len(data)))


def _logmel_for_display(x: torch.Tensor, cfg: Config) -> torch.Tensor:
    from mmfit.data.modalities.audio import log_mel

    a = cfg.data.audio
    return log_mel(x, a.sample_rate, a.n_fft, a.hop_length, a.n_mels)


def augment_preview(cfg: Config, output: Path, n: int = 6, seed: int = 0, rounds: int = 2) -> tuple[Path, list[str]]:
    """Draw `rounds` augmented versions of n rows per image/audio modality; -> (png, text lines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pre, original = preview_batch(cfg, n, seed)
    augment = Augmenter.from_preprocessor(cfg.augment, pre)
    versions = [original] + [augment(_copy(original), torch.Generator().manual_seed(seed + 1 + r))
                             for r in range(rounds)]
    grid_mods = [m for m in pre.modalities if modality_kind(cfg, m) in ("image", "audio", "video")]
    k = original.size
    lines: list[str] = []
    hidden = {}  # [CLS]/[SEP]/[PAD] are not shown; [MASK]/[UNK] (token dropout) are
    for m, t in pre.texts.items():
        specials, replacement, _ = t.token_roles()
        hidden[m] = set(specials) - {replacement}
    for m in pre.texts:
        lines.append(f"[{m}]")
        for i in range(k):
            if not bool(original.present[m][i]):
                continue
            for r, b in enumerate(versions):
                ids = b.inputs[m]["input_ids"][i][b.inputs[m]["attention_mask"][i]].tolist()
                ids = [t for t in ids if t not in hidden[m]]
                tag = "original " if r == 0 else f"augment {r}"
                lines.append(f"  row {i} {tag}: {pre.texts[m].decode(ids)}")
    if "tabular" in pre.modalities:
        lines.append("[tabular] standardised numbers")
        for i in range(k):
            vals = [" ".join(f"{v:+.2f}" for v in b.inputs["tabular"]["values"][i].tolist()) for b in versions]
            lines.append(f"  row {i}: " + "  ->  ".join(vals))
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    n_rows = max(1, len(grid_mods) * len(versions))
    fig, axes = plt.subplots(n_rows, k, figsize=(2.0 * k, 2.0 * n_rows), squeeze=False)
    for a in axes.flat:
        a.axis("off")
    for gi, m in enumerate(grid_mods):
        kind = modality_kind(cfg, m)
        waveform = pre.files[m].features == "waveform" if kind == "audio" else False
        ref = original.inputs[m]["x"]  # one colour scale per row: the original's, so gain and noise show
        ref = _logmel_for_display(ref, cfg) if waveform else ref
        for r, b in enumerate(versions):
            row = gi * len(versions) + r
            x = b.inputs[m]["x"]
            if waveform:
                x = _logmel_for_display(x, cfg)
            for i in range(k):
                ax = axes[row, i]
                if not bool(original.present[m][i]):
                    continue
                if kind == "image":
                    ax.imshow(x[i].permute(1, 2, 0).clamp(0, 1).numpy())
                elif kind == "video":  # the frames side by side
                    t, c, h, w = x[i].shape
                    ax.imshow(x[i].permute(2, 0, 3, 1).reshape(h, t * w, c).clamp(0, 1).numpy())
                else:
                    ax.imshow(x[i].numpy(), origin="lower", aspect="auto", cmap="magma",
                              vmin=float(ref[i].min()), vmax=float(ref[i].max()))
                if i == 0:
                    ax.set_title(f"{m}: {'original' if r == 0 else f'augmented {r}'}", fontsize=8, loc="left")
    if not grid_mods:
        axes[0, 0].text(0.5, 0.5, "no image, audio or video column", ha="center")
    fig.tight_layout()
    fig.savefig(output, dpi=90)
    plt.close(fig)
    return output, lines


def _copy(batch):
    from mmfit.data.batch import Batch

    return Batch({m: {k: v.clone() for k, v in d.items()} for m, d in batch.inputs.items()},
                 {m: v.clone() for m, v in batch.present.items()}, batch.targets, batch.target_mask, batch.rows)


def describe(cfg: Config) -> Optional[str]:
    """One line saying what augmentation is on, or None when all of it is off."""
    from dataclasses import asdict

    on = []
    for part in ("image", "audio", "video", "text", "tabular"):
        vals = {k: v for k, v in asdict(getattr(cfg.augment, part)).items()
                if v not in (0, 0.0, None) and k not in ("noise_p", "time_mask_width", "freq_mask_width")}
        if vals:
            on.append(f"{part}: " + ", ".join(f"{k}={v}" for k, v in vals.items()))
    if cfg.augment.mixup:
        on.append(f"mixup alpha={cfg.augment.mixup}")
    return "; ".join(on) or None
