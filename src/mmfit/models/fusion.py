"""Fusion: per-modality EncoderOutputs + presence -> one fused vector per row.

Every fusion first projects each modality's pooled output into the shared width; a row
where a modality is absent gets that modality's learned "missing" embedding instead.
"""

from __future__ import annotations

import torch
from torch import nn

from mmfit.models.contract import EncoderOutput, TransformerStack
from mmfit.registry import FUSIONS


class ModalityProjector(nn.Module):
    def __init__(self, dims: dict[str, int], dim: int):
        super().__init__()
        self.names = list(dims)
        self.proj = nn.ModuleDict({m: nn.Sequential(nn.Linear(d, dim), nn.LayerNorm(dim)) for m, d in dims.items()})
        self.missing = nn.ParameterDict({m: nn.Parameter(torch.zeros(dim)) for m in dims})

    def forward(self, outputs: dict[str, EncoderOutput], present: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        h = {}
        for m in self.names:
            p = self.proj[m](outputs[m].pooled)
            h[m] = torch.where(present[m].unsqueeze(-1), p, self.missing[m].to(p.dtype).expand_as(p))
        return h


@FUSIONS.register("concat")
class ConcatFusion(nn.Module):
    """Concatenate the modality embeddings, then an MLP."""

    def __init__(self, dims: dict[str, int], dim: int, layers: int = 1, heads: int = 4, dropout: float = 0.1):
        super().__init__()
        self.project = ModalityProjector(dims, dim)
        self.mlp = nn.Sequential(nn.Linear(dim * len(dims), dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(dim, dim), nn.LayerNorm(dim))

    def forward(self, outputs, present):
        h = self.project(outputs, present)
        return self.mlp(torch.cat([h[m] for m in self.project.names], dim=-1)), h


@FUSIONS.register("gated")
class GatedFusion(nn.Module):
    """Gated multimodal unit: a softmax gate over modalities weighs each tanh-transformed embedding."""

    def __init__(self, dims: dict[str, int], dim: int, layers: int = 1, heads: int = 4, dropout: float = 0.1):
        super().__init__()
        self.project = ModalityProjector(dims, dim)
        self.transform = nn.ModuleDict({m: nn.Linear(dim, dim) for m in dims})
        self.gate = nn.Linear(dim * len(dims), len(dims))
        self.out = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, dim), nn.GELU(), nn.LayerNorm(dim))

    def forward(self, outputs, present):
        h = self.project(outputs, present)
        names = self.project.names
        logits = self.gate(torch.cat([h[m] for m in names], dim=-1))
        w = torch.softmax(logits, dim=-1)  # [B, M]
        z = torch.stack([torch.tanh(self.transform[m](h[m])) for m in names], dim=1)  # [B, M, D]
        return self.out((w.unsqueeze(-1) * z).sum(1)), h


@FUSIONS.register("attention")
class AttentionFusion(nn.Module):
    """Cross-modal attention: a [CLS] token attends over every modality's tokens (absent ones
    masked) plus one summary token per modality (its projection, or the missing embedding)."""

    def __init__(self, dims: dict[str, int], dim: int, layers: int = 1, heads: int = 4, dropout: float = 0.1):
        super().__init__()
        self.project = ModalityProjector(dims, dim)
        self.token_proj = nn.ModuleDict({m: nn.Linear(d, dim) for m, d in dims.items()})
        self.type_embed = nn.ParameterDict({m: nn.Parameter(torch.randn(dim) * 0.02) for m in dims})
        self.cls = nn.Parameter(torch.randn(dim) * 0.02)
        self.body = TransformerStack(dim, max(1, layers), heads, dropout)

    def forward(self, outputs, present):
        h = self.project(outputs, present)
        b = next(iter(h.values())).shape[0]
        seq = [self.cls.expand(b, 1, -1)]
        masks = [torch.ones(b, 1, dtype=torch.bool, device=self.cls.device)]
        for m in self.project.names:
            o = outputs[m]
            seq.append(self.token_proj[m](o.tokens) + self.type_embed[m])
            masks.append(o.mask & present[m].unsqueeze(1))
            seq.append((h[m] + self.type_embed[m]).unsqueeze(1))
            masks.append(torch.ones(b, 1, dtype=torch.bool, device=self.cls.device))
        x = self.body(torch.cat(seq, dim=1), torch.cat(masks, dim=1))
        return x[:, 0], h
