"""The EncoderOutput contract every encoder meets, and a shared masked transformer stack."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn


@dataclass
class EncoderOutput:
    tokens: torch.Tensor  # [B, T, D]
    mask: torch.Tensor  # [B, T] bool, True = real token
    pooled: torch.Tensor  # [B, D]


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(tokens.dtype)
    return (tokens * m).sum(1) / m.sum(1).clamp(min=1.0)


def safe_padding_mask(mask: torch.Tensor) -> torch.Tensor:
    """Key-padding mask for attention; a row with no real token keeps its first one (avoids NaN)."""
    mask = mask.clone()
    mask[~mask.any(dim=1), 0] = True
    return ~mask


def resize_images(x: torch.Tensor, size: int | None) -> torch.Tensor:
    """[B, C, H, W] to size x size inside an encoder: an exact average pooling when the side divides
    evenly (no aliasing, and ONNX-exportable), else bilinear."""
    if not size or x.shape[-1] == size:
        return x
    if x.shape[-1] % size == 0 and x.shape[-2] % size == 0:
        return nn.functional.avg_pool2d(x, x.shape[-1] // size)
    return nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def gelu(x: torch.Tensor) -> torch.Tensor:
    return nn.functional.gelu(x)


class TransformerStack(nn.Module):
    """Pre-norm transformer encoder over [B, T, D] with a boolean token mask.

    The activation is passed as a plain function on purpose: that turns off torch's fused
    inference "fast path", which reads linear1/linear2 weights directly and so would silently
    bypass LoRA/IA3 adapters and pruning masks at evaluation time."""

    def __init__(self, dim: int, layers: int, heads: int, dropout: float):
        super().__init__()
        layer = nn.TransformerEncoderLayer(dim, heads, dim * 4, dropout, activation=gelu, batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False) if layers else None
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.encoder is not None:
            x = self.encoder(x, src_key_padding_mask=safe_padding_mask(mask))
        return self.norm(x)


def sincos_2d(h: int, w: int, dim: int, device=None) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding [h*w, dim] (any grid size, no learned table)."""
    gy, gx = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                            torch.arange(w, device=device, dtype=torch.float32), indexing="ij")
    q = dim // 4
    omega = 1.0 / (10000 ** (torch.arange(q, device=device, dtype=torch.float32) / max(q, 1)))
    out = [torch.sin(gy.reshape(-1, 1) * omega), torch.cos(gy.reshape(-1, 1) * omega),
           torch.sin(gx.reshape(-1, 1) * omega), torch.cos(gx.reshape(-1, 1) * omega)]
    pe = torch.cat(out, dim=1)
    if pe.shape[1] < dim:
        pe = torch.cat([pe, torch.zeros(h * w, dim - pe.shape[1], device=device)], dim=1)
    return pe


def sincos_1d(n: int, dim: int, device=None) -> torch.Tensor:
    pos = torch.arange(n, device=device, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(n, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)[:, : dim // 2]
    return pe


def token_grid(n_tokens: int, height: int, width: int) -> Optional[tuple[int, int]]:
    """(rows, columns) of an encoder's tokens laid over an input of height x width (row-major, as
    conv stems flatten their feature maps), or None when no grid of that shape fits (or fewer than
    four tokens: nothing left to reconstruct from)."""
    best = None
    for rows in range(1, n_tokens + 1):
        if n_tokens % rows == 0:
            cols = n_tokens // rows
            err = abs(math.log((rows / cols) / (height / width)))
            if best is None or err < best[0]:
                best = (err, rows, cols)
    if best is None or best[0] > 0.5 or best[1] > height or best[2] > width or n_tokens < 4:
        return None
    return best[1], best[2]
