"""Self-supervised objectives on a model's encoders (`mmfit pretrain`, training/pretrain.py).

- masked language modelling (BERT): a share of each text's tokens hidden (80 % [MASK], 10 % a random
  token, 10 % kept), predicted from the encoder's output at their positions;
- masked patch modelling: a share of an image's (or log-mel spectrogram's) patches hidden in the
  input (filled with the sample's mean, SimMIM-style, so it works for any encoder with a grid of
  tokens, convolutional or not) and reconstructed from the tokens over them, each patch's pixels
  normalised (MAE's per-patch target);
- cross-modal contrastive: the pooled outputs of every pair of modalities projected into one space,
  symmetric InfoNCE with a learned temperature over the batch's rows that have both (CLIP); rows
  missing one side are left out of that pair.

One forward pass over the masked inputs serves all three (FLIP shows contrastive learning on
masked images works as well at a fraction of the cost). Encoders whose weights are frozen are not
masked: their outputs take part in the contrastive term through their projection only. Each term
is returned on its own (`mlm/<m>`, `patches/<m>`, `contrastive/<a>~<b>`) beside the weighted total.
"""

from __future__ import annotations

import itertools
import math
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from mmfit.config import Config, modality_kind
from mmfit.models.contract import EncoderOutput, token_grid
from mmfit.models.finetune import is_frozen
from mmfit.models.model import keep_frozen_in_eval, run_encoder

PATCH_VALUES = 4  # a patch's reconstruction target: its pixels pooled to 4 x 4 per channel


def mask_tokens(ids: torch.Tensor, attention: torch.Tensor, special: list[int], mask_id: int, vocab: int,
                ratio: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking -> (input ids, labels: the original id where masked, -100 elsewhere). Every
    text with a maskable token has at least one masked."""
    cpu_ids, cpu_att = ids.cpu(), attention.cpu().bool()
    can = cpu_att & ~torch.isin(cpu_ids, torch.tensor(special, dtype=cpu_ids.dtype))
    chosen = can & (torch.rand(ids.shape, generator=gen) < ratio)
    none = ~chosen.any(1) & can.any(1)
    if none.any():
        pick = (torch.rand(ids.shape, generator=gen) * can).argmax(1)
        chosen[none, pick[none]] = True
    labels = torch.where(chosen, cpu_ids, torch.full_like(cpu_ids, -100))
    u = torch.rand(ids.shape, generator=gen)
    out = cpu_ids.clone()
    out[chosen & (u < 0.8)] = mask_id
    swap = chosen & (u >= 0.8) & (u < 0.9)
    out[swap] = torch.randint(0, vocab, (int(swap.sum()),), generator=gen, dtype=out.dtype)
    return out.to(ids.device), labels.to(ids.device)


def patch_mask(n: int, grid: tuple[int, int], ratio: float, gen: torch.Generator) -> torch.Tensor:
    """[n, rows * cols] bool: round(ratio * cells) cells of each sample, drawn at random."""
    cells = grid[0] * grid[1]
    k = min(cells - 1, max(1, round(ratio * cells))) if cells > 1 else 1
    idx = torch.rand(n, cells, generator=gen).argsort(1)[:, :k]
    return torch.zeros(n, cells, dtype=torch.bool).scatter_(1, idx, True)


def hide_patches(x: torch.Tensor, mask: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """x [B, C, H, W]; the masked cells of the grid filled with each sample's per-channel mean."""
    up = F.interpolate(mask.view(-1, 1, *grid).float(), size=x.shape[-2:], mode="nearest").to(x.dtype)
    fill = x.mean(dim=(2, 3), keepdim=True)
    return x * (1 - up) + fill * up


def patch_targets(x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """x [B, C, H, W] -> [B, cells, C * 4 * 4]: each cell pooled to 4 x 4 values, normalised per patch."""
    b, c = x.shape[:2]
    rows, cols = grid
    p = PATCH_VALUES
    t = F.adaptive_avg_pool2d(x, (rows * p, cols * p)).view(b, c, rows, p, cols, p)
    t = t.permute(0, 2, 4, 1, 3, 5).reshape(b, rows * cols, c * p * p)
    return (t - t.mean(-1, keepdim=True)) / (t.var(-1, keepdim=True) + 1e-6).sqrt()


def info_nce(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE between row-aligned embeddings (row i of a matches row i of b)."""
    logits = scale * F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T
    y = torch.arange(len(a), device=a.device)
    return (F.cross_entropy(logits, y) + F.cross_entropy(logits.T, y)) / 2


def _grid_of(encoder: nn.Module, shape: tuple) -> Optional[tuple[int, int]]:
    """The token grid of an image / log-mel encoder over inputs of a row shape: one pass over zeros,
    in eval mode (no random draws: a resumed run's draws stay those of the run it continues)."""
    was = encoder.training
    encoder.eval()
    with torch.no_grad():
        n = encoder({"x": torch.zeros(1, *shape)}).tokens.shape[1]
    encoder.train(was)
    return token_grid(n, *shape[-2:])


class Pretrainer(nn.Module):
    """The encoders (named `encoders.<m>` as in MultimodalModel, so a run's weights load into
    training as they are) plus each objective's small head."""

    def __init__(self, encoders: dict[str, nn.Module], cfg: Config, pre):
        super().__init__()
        p = cfg.pretrain
        self.weights = {"mlm": p.mlm, "patches": p.masked_patches, "contrastive": p.contrastive}
        self.text_ratio, self.patch_ratio = p.text_mask, p.patch_mask
        self.encoders = nn.ModuleDict(encoders)
        self.kinds = {m: modality_kind(cfg, m) for m in encoders}
        learns = {m for m, e in encoders.items() if not is_frozen(e)}
        self.mlm = nn.ModuleDict()
        self.patches = nn.ModuleDict()
        self.text_roles = {}
        self.grids: dict[str, tuple[int, int]] = {}
        for m in sorted(learns):
            e, kind = encoders[m], self.kinds[m]
            if kind == "text" and p.mlm > 0:
                special, mask_id, _ = pre.texts[m].token_roles()
                self.text_roles[m] = (special, mask_id, pre.texts[m].vocab_size)
                self.mlm[m] = nn.Sequential(nn.Linear(e.dim, e.dim), nn.GELU(), nn.LayerNorm(e.dim),
                                            nn.Linear(e.dim, pre.texts[m].vocab_size))
            elif kind in ("image", "audio") and p.masked_patches > 0 and len(pre.input_spec()[m]["x"][0]) >= 2:
                shape = pre.input_spec()[m]["x"][0]
                grid = _grid_of(e, shape)
                if grid is not None:
                    self.grids[m] = grid
                    self.patches[m] = nn.Linear(e.dim, (1 if len(shape) == 2 else shape[0]) * PATCH_VALUES ** 2)
        self.proj = nn.ModuleDict()
        if p.contrastive > 0 and len(encoders) > 1:
            self.proj = nn.ModuleDict({m: nn.Linear(e.dim, p.proj_dim) for m, e in encoders.items()})
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / p.temperature)))

    def objectives(self) -> list[str]:
        """What this model learns, in words (logged when pretraining starts)."""
        out = [f"masked language modelling ({m})" for m in self.mlm]
        out += [f"masked patch modelling ({m})" for m in self.patches]
        if self.proj:
            out.append("contrastive (" + ", ".join(f"{a}~{b}" for a, b in itertools.combinations(self.proj, 2)) + ")")
        return out

    def train(self, mode: bool = True):
        super().train(mode)
        keep_frozen_in_eval(self.encoders)
        return self

    def _encode(self, m: str, inputs: dict) -> EncoderOutput:
        return run_encoder(self.encoders[m], inputs)

    def _masked_patches(self, m: str, inputs: dict, present: torch.Tensor, gen) -> tuple:
        x = inputs["x"]
        img = x.unsqueeze(1) if x.dim() == 3 else x  # log-mel [B, mels, frames] as one channel
        grid = self.grids[m]
        mask = patch_mask(len(x), grid, self.patch_ratio, gen).to(x.device)
        hidden = hide_patches(img, mask, grid)
        out = self._encode(m, {**inputs, "x": hidden.squeeze(1) if x.dim() == 3 else hidden})
        pred = self.patches[m](out.tokens)
        err = ((pred - patch_targets(img, grid)) ** 2).mean(-1)
        keep = mask & present.unsqueeze(1)
        return out, err[keep].mean() if keep.any() else None

    def forward(self, inputs: dict, present: dict, gen: torch.Generator) -> dict[str, torch.Tensor]:
        terms: dict[str, torch.Tensor] = {}
        pooled = {}
        for m in self.encoders:
            if m in self.mlm:
                special, mask_id, vocab = self.text_roles[m]
                ids, labels = mask_tokens(inputs[m]["input_ids"], inputs[m]["attention_mask"], special, mask_id,
                                          vocab, self.text_ratio, gen)
                labels[~present[m]] = -100
                out = self._encode(m, {**inputs[m], "input_ids": ids})
                if (labels != -100).any():
                    logits = self.mlm[m](out.tokens[labels != -100])
                    terms[f"mlm/{m}"] = F.cross_entropy(logits, labels[labels != -100])
            elif m in self.patches:
                out, loss = self._masked_patches(m, inputs[m], present[m], gen)
                if loss is not None:
                    terms[f"patches/{m}"] = loss
            else:
                out = self._encode(m, inputs[m])
            pooled[m] = out.pooled
        scale = self.logit_scale.exp().clamp(max=100.0)
        for a, b in itertools.combinations(self.proj, 2):
            both = present[a] & present[b]
            if int(both.sum()) >= 2:
                terms[f"contrastive/{a}~{b}"] = info_nce(self.proj[a](pooled[a][both]), self.proj[b](pooled[b][both]),
                                                         scale)
        total = sum(self.weights[k.split("/")[0]] * v for k, v in terms.items())
        terms["total"] = total if terms else pooled[next(iter(pooled))].sum() * 0.0
        return terms


@torch.no_grad()
def pretrain_losses(model: Pretrainer, data, batch_size: int, device, seed: int) -> dict[str, float]:
    """Every term's mean over a split, with masks drawn from a fixed seed (the same masks each time,
    so epochs compare). -> {"loss": total, "log_loss": scale-free total, term: value}.

    `log_loss`, the weighted mean of each term's log, is what a pretraining run stops and keeps its
    weights on: it moves by each term's relative change, so a term on a large scale (masked
    language modelling over a vocabulary: ~7 nats, flat once a small corpus is memorised) cannot
    hide that the others (a patch loss of ~0.5, a contrastive loss) still improve."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for batch in data.batches(batch_size):
        batch = batch.to(device)
        for k, v in model(batch.inputs, batch.present, gen).items():
            sums[k] = sums.get(k, 0.0) + float(v) * batch.size
            counts[k] = counts.get(k, 0) + batch.size
    out = {k: sums[k] / counts[k] for k in sums}
    out["loss"] = out.pop("total", 0.0)
    weights = {k: model.weights[k.split("/")[0]] for k in out if k != "loss"}
    if weights:
        out["log_loss"] = sum(w * math.log(max(out[k], 1e-8)) for k, w in weights.items()) / sum(weights.values())
    return out
