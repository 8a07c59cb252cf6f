"""Task heads on the fused vector, and auxiliary heads on each modality's own embedding."""

from __future__ import annotations

from torch import nn


class Head(nn.Module):
    def __init__(self, dim: int, n_out: int, dropout: float = 0.1):
        super().__init__()
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, n_out))

    def forward(self, x):
        return self.net(x)
