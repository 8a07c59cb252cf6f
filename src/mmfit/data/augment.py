"""Train-time augmentation on batches, per modality, plus mixup across all modalities.

Only the training loop calls it; evaluation and prediction never do. Every random draw comes
from the torch.Generator the loop passes in (seeded per epoch), so a run is reproducible and a
resumed run sees the same augmentations. Images use kornia's functional ops with parameters
drawn here (not kornia's global-RNG modules), which is what keeps them deterministic.

- images [B,3,H,W] in [0,1]: random resized crop, rotation, flips, colour jitter, noise, blur
- videos [B,T,3,H,W]: the image transforms drawn once per clip, frame drop
- audio log-mel [B,mels,frames] (natural log of power): gain, white noise at an SNR (added in the
  power domain), time shift, SpecAugment time/frequency masks; raw waveforms [B,samples] (`hf`
  audio encoders): gain, noise at an SNR, time shift (masks need a spectrogram)
- text token ids: token dropout (-> [MASK]/[UNK]), swap with the neighbour, deletion
- numbers: gaussian jitter on the standardised values of present cells
- mixup: `Augmenter.sample_mix` draws the pairs and weights; the model mixes each modality's encoder
  output of row i with row perm[i] (models/mixup.py, so text and categories mix too, which they
  cannot as raw ids); the loss mixes the targets with the same weight (`permuted_targets`).
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from mmfit.config import AugmentConfig
from mmfit.data.batch import Batch

LOG10 = math.log(10.0)


def _u(gen: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


class Augmenter:
    def __init__(self, cfg: AugmentConfig, kinds: dict[str, str], text_roles: Optional[dict] = None,
                 audio_features: Optional[dict[str, str]] = None):
        self.cfg = cfg
        self.kinds = kinds  # modality -> text | image | audio | tabular
        self.text_roles = text_roles or {}  # modality -> (special ids, replacement id, pad id)
        self.audio_features = audio_features or {}  # modality -> logmel | waveform

    @classmethod
    def from_preprocessor(cls, cfg: AugmentConfig, pre) -> "Augmenter":
        from mmfit.config import modality_kind

        kinds = {m: modality_kind(pre.cfg, m) for m in pre.modalities}
        roles = {m: t.token_roles() for m, t in pre.texts.items()}
        feats = {m: p.features for m, p in pre.files.items() if kinds[m] == "audio"}
        return cls(cfg, kinds, roles, feats)

    # ------------------------------------------------------------------ which parts are on
    def _on(self, kind: str) -> bool:
        c = self.cfg
        if kind == "image":
            i = c.image
            return bool(i.crop or i.rotate or i.hflip or i.vflip or i.jitter or i.noise or i.blur)
        if kind == "audio":
            a = c.audio
            return bool(a.gain_db or a.snr_db is not None or a.shift or a.time_masks or a.freq_masks)
        if kind == "video":
            return bool(c.video.frame_drop or (c.video.image and self._on("image")))
        if kind == "text":
            t = c.text
            return bool(t.token_dropout or t.swap or t.deletion)
        return bool(c.tabular.jitter)

    def touches(self, modality: str) -> bool:
        """Whether this modality's inputs are augmented (then no two epochs see the same input)."""
        return modality in self.kinds and self._on(self.kinds[modality])

    @property
    def active(self) -> bool:
        return any(self._on(k) for k in set(self.kinds.values())) or self.cfg.mixup > 0

    # ------------------------------------------------------------------ per-batch
    def __call__(self, batch, gen: torch.Generator):
        """Augment a Batch (new tensors; the stored data is never modified)."""
        for m, kind in self.kinds.items():
            if m not in batch.inputs or not self._on(kind):
                continue
            x = batch.inputs[m]
            if kind == "image":
                batch.inputs[m] = {**x, "x": self.image(x["x"], gen)}
            elif kind == "video":
                batch.inputs[m] = {**x, "x": self.video(x["x"], gen)}
            elif kind == "audio":
                fn = self.waveform if self.audio_features.get(m) == "waveform" else self.logmel
                batch.inputs[m] = {**x, "x": fn(x["x"], gen)}
            elif kind == "text":
                ids, mask = self.text(x["input_ids"], x["attention_mask"], gen, *self.text_roles[m])
                batch.inputs[m] = {**x, "input_ids": ids, "attention_mask": mask}
            else:
                batch.inputs[m] = {**x, "values": self.tabular(x["values"], x["feature_mask"], gen)}
        return batch

    def sample_mix(self, n: int, gen: torch.Generator) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
        """-> (perm, lam) for mixup of this batch, or None."""
        a = self.cfg.mixup
        if a <= 0 or n < 2 or float(torch.rand(1, generator=gen)) >= self.cfg.mixup_p:
            return None
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
        lam = float(np.random.default_rng(seed).beta(a, a))
        return torch.randperm(n, generator=gen), torch.tensor(lam)

    # ------------------------------------------------------------------ images
    def image(self, x: torch.Tensor, gen: torch.Generator, frames: int = 1) -> torch.Tensor:
        """Images [B, 3, H, W]; with `frames` > 1, B / frames clips of that many frames each, every
        parameter drawn once per clip (a clip is rotated, cropped, flipped, jittered alike)."""
        from kornia.enhance import adjust_brightness, adjust_contrast, adjust_saturation
        from kornia.filters import gaussian_blur2d
        from kornia.geometry.transform import crop_and_resize, rotate

        c = self.cfg.image
        n, _, h, w = x.shape
        b = n // frames
        dev = x.device

        def u(lo: float, hi: float) -> torch.Tensor:  # one draw per clip, for each of its frames
            return _u(gen, b, lo, hi).repeat_interleave(frames)

        def chance(p: float) -> torch.Tensor:
            return (torch.rand(b, generator=gen) < p).repeat_interleave(frames)

        if c.crop:
            area = u(c.crop, 1.0)
            ratio = torch.exp(u(math.log(3 / 4), math.log(4 / 3)))
            cw = (torch.sqrt(area * ratio) * w).clamp(2, w)
            ch = (torch.sqrt(area / ratio) * h).clamp(2, h)
            x0 = u(0.0, 1.0) * (w - cw)
            y0 = u(0.0, 1.0) * (h - ch)
            x1, y1 = x0 + cw - 1, y0 + ch - 1
            boxes = torch.stack([torch.stack([x0, y0], 1), torch.stack([x1, y0], 1),
                                 torch.stack([x1, y1], 1), torch.stack([x0, y1], 1)], 1)
            x = crop_and_resize(x, boxes.to(dev, x.dtype), (h, w))
        if c.rotate:
            x = rotate(x, u(-c.rotate, c.rotate).to(dev, x.dtype))
        if c.hflip:
            x = torch.where(chance(c.hflip).to(dev).view(n, 1, 1, 1), x.flip(-1), x)
        if c.vflip:
            x = torch.where(chance(c.vflip).to(dev).view(n, 1, 1, 1), x.flip(-2), x)
        if c.jitter:
            j = c.jitter
            x = adjust_brightness(x, u(-j, j).to(dev, x.dtype))
            x = adjust_contrast(x, u(1 - j, 1 + j).to(dev, x.dtype))
            if x.shape[1] == 3:
                x = adjust_saturation(x, u(1 - j, 1 + j).to(dev, x.dtype))
        if c.blur:
            sel = chance(c.blur)
            sigma = u(0.1, 1.5)
            if sel.any():
                idx = sel.nonzero().squeeze(1).to(dev)
                s = sigma[sel].unsqueeze(1).repeat(1, 2).to(dev, x.dtype)
                x = x.index_copy(0, idx, gaussian_blur2d(x[idx], (5, 5), s))
        if c.noise:
            x = x + c.noise * torch.randn(x.shape, generator=gen).to(dev, x.dtype)
        return x.clamp(0.0, 1.0)

    # ------------------------------------------------------------------ video
    def video(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Clips [B, T, 3, H, W]: the image transforms per clip (augment.video.image), then frame drop:
        each frame dropped with chance frame_drop, the nearest kept frame in its place (one always stays;
        the shape, and so the model and its export, are unchanged)."""
        c = self.cfg.video
        b, t = x.shape[:2]
        if c.image and self._on("image"):
            x = self.image(x.reshape(b * t, *x.shape[2:]), gen, frames=t).reshape(x.shape)
        if c.frame_drop > 0 and t > 1:
            kept = torch.rand(b, t, generator=gen) >= c.frame_drop
            kept[torch.arange(b), torch.randint(0, t, (b,), generator=gen)] = True
            pos = torch.arange(t, dtype=torch.float32)
            dist = (pos.view(1, t, 1) - pos.view(1, 1, t)).abs() + torch.where(kept, 0.0, float(t) * 2).unsqueeze(1)
            source = dist.argmin(2)  # [B, T]: the kept frame nearest to each
            x = x[torch.arange(b).unsqueeze(1), source.to(x.device)]
        return x

    # ------------------------------------------------------------------ audio
    def logmel(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        c = self.cfg.audio
        b, mels, frames = x.shape
        dev = x.device
        if c.gain_db:
            g = _u(gen, b, -c.gain_db, c.gain_db) * LOG10 / 10.0  # dB of power -> natural log
            x = x + g.to(dev, x.dtype).view(b, 1, 1)
        if c.snr_db is not None:
            sel = (torch.rand(b, generator=gen) < c.noise_p).to(dev)
            power = x.exp()
            signal = power.mean(dim=(1, 2), keepdim=True)
            noise = signal / 10 ** (c.snr_db / 10)
            # white noise: flat expected power per bin, exponentially distributed per frame
            draw = torch.empty(x.shape).exponential_(1.0, generator=gen).to(dev, x.dtype)
            noisy = torch.log(power + noise * draw)
            x = torch.where(sel.view(b, 1, 1), noisy, x)
        if c.shift:
            x = self._roll(x, self._shifts(b, frames, gen), dim=2)
        if c.time_masks or c.freq_masks:
            fill = x.mean(dim=(1, 2), keepdim=True)
            keep = torch.ones(b, mels, frames, dtype=torch.bool)
            for _ in range(c.time_masks):
                keep &= ~self._band(b, frames, c.time_mask_width, gen).unsqueeze(1)
            for _ in range(c.freq_masks):
                keep &= ~self._band(b, mels, c.freq_mask_width, gen).unsqueeze(2)
            x = torch.where(keep.to(dev), x, fill)
        return x

    def waveform(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        c = self.cfg.audio
        b, n = x.shape
        dev = x.device
        if c.gain_db:
            x = x * (10 ** (_u(gen, b, -c.gain_db, c.gain_db) / 20)).to(dev, x.dtype).view(b, 1)
        if c.snr_db is not None:
            sel = (torch.rand(b, generator=gen) < c.noise_p).to(dev)
            rms = x.pow(2).mean(1, keepdim=True).sqrt()
            sd = rms / 10 ** (c.snr_db / 20)
            noisy = x + sd * torch.randn(x.shape, generator=gen).to(dev, x.dtype)
            x = torch.where(sel.view(b, 1), noisy, x)
        if c.shift:
            x = self._roll(x, self._shifts(b, n, gen), dim=1)
        return x

    def _shifts(self, b: int, n: int, gen: torch.Generator) -> torch.Tensor:
        k = int(self.cfg.audio.shift * n)
        return torch.randint(-k, k + 1, (b,), generator=gen)

    @staticmethod
    def _roll(x: torch.Tensor, shifts: torch.Tensor, dim: int) -> torch.Tensor:
        n = x.shape[dim]
        idx = (torch.arange(n).unsqueeze(0) - shifts.unsqueeze(1)) % n  # [B, n]
        if dim == 2:
            idx = idx.unsqueeze(1).expand(x.shape[0], x.shape[1], n)
        return x.gather(dim, idx.to(x.device))

    @staticmethod
    def _band(b: int, n: int, width: int, gen: torch.Generator) -> torch.Tensor:
        """[B, n] bool: one random band of 0..width positions per row (at most a quarter of the axis,
        so a short clip is never blanked out)."""
        w = torch.randint(0, max(1, min(width, n // 4)) + 1, (b,), generator=gen)
        start = (torch.rand(b, generator=gen) * (n - w + 1)).long()
        pos = torch.arange(n).unsqueeze(0)
        return (pos >= start.unsqueeze(1)) & (pos < (start + w).unsqueeze(1))

    # ------------------------------------------------------------------ text
    def text(self, ids: torch.Tensor, mask: torch.Tensor, gen: torch.Generator, specials: list[int],
             replace_id: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.cfg.text
        dev = ids.device
        ids, mask = ids.clone(), mask.clone()
        b, n = ids.shape
        special = torch.isin(ids, torch.tensor(specials, device=dev))

        def words() -> torch.Tensor:
            return mask & ~special

        if c.swap:
            cand = words()
            pick = (torch.rand(b, n, generator=gen).to(dev) < c.swap) & cand
            pick[:, -1] = False
            pick[:, :-1] &= cand[:, 1:]  # the neighbour must be a word token too
            pick[:, 1:] &= ~pick[:, :-1].clone()  # no overlapping swaps
            nxt = torch.zeros_like(pick)
            nxt[:, 1:] = pick[:, :-1]
            left, right = ids.roll(-1, dims=1), ids.roll(1, dims=1)
            ids = torch.where(pick, left, torch.where(nxt, right, ids))
        if c.deletion:
            cand = words()
            drop = (torch.rand(b, n, generator=gen).to(dev) < c.deletion) & cand
            drop &= ~(drop == cand).all(1, keepdim=True) | ~cand.any(1, keepdim=True)  # keep one word
            order = torch.argsort(drop.int(), dim=1, stable=True)  # kept tokens first, in order
            ids, mask = ids.gather(1, order), mask.gather(1, order)
            gone = drop.sum(1, keepdim=True)
            tail = torch.arange(n, device=dev).unsqueeze(0) >= (n - gone)
            ids = torch.where(tail, torch.full_like(ids, pad_id), ids)
            mask = mask & ~tail
            special = torch.isin(ids, torch.tensor(specials, device=dev))
        if c.token_dropout:
            hit = (torch.rand(b, n, generator=gen).to(dev) < c.token_dropout) & words()
            ids = torch.where(hit, torch.full_like(ids, replace_id), ids)
        return ids, mask

    # ------------------------------------------------------------------ numbers
    def tabular(self, values: torch.Tensor, feature_mask: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if values.shape[1] == 0:
            return values
        noise = self.cfg.tabular.jitter * torch.randn(values.shape, generator=gen).to(values.device, values.dtype)
        return values + noise * feature_mask[:, : values.shape[1]].to(values.dtype)


def permuted_targets(batch, perm: torch.Tensor):
    """The batch with targets (and their masks) taken from row perm[i]: mixup's second target."""
    perm = perm.to(next(iter(batch.present.values())).device)
    return Batch(batch.inputs, batch.present, {k: v[perm] for k, v in batch.targets.items()},
                 {k: v[perm] for k, v in batch.target_mask.items()},
                 None if batch.rows is None else batch.rows[perm.to(batch.rows.device)])
