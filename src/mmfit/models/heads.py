"""Task heads on the fused vector, and auxiliary heads on each modality's own embedding."""

from __future__ import annotations

import math

import torch
from torch import nn


class Head(nn.Module):
    def __init__(self, dim: int, n_out: int, dropout: float = 0.1):
        super().__init__()
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, n_out))

    def forward(self, x):
        return self.net(x)


class MatchHead(nn.Module):
    """A matching task's two projections into one space (CLIP): each side's embedding -> a unit
    vector times sqrt(scale), so that the dot product of two rows' outputs is scale x their cosine
    similarity (scale = 1 / temperature, learned). Output [B, 2, dim]: side a, side b."""

    reads_modalities = True

    def __init__(self, dim: int, between: list[str], temperature: float = 0.07):
        super().__init__()
        self.between = list(between)
        self.a, self.b = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / temperature)))

    def side(self, which: int, emb: torch.Tensor) -> torch.Tensor:
        """One side's unit vectors (`which` 0: between[0], 1: between[1])."""
        return nn.functional.normalize((self.a if which == 0 else self.b)(emb), dim=-1)

    def forward(self, emb: dict[str, torch.Tensor]) -> torch.Tensor:
        root = self.logit_scale.clamp(max=math.log(100.0)).mul(0.5).exp()
        return torch.stack([self.side(0, emb[self.between[0]]), self.side(1, emb[self.between[1]])], 1) * root
