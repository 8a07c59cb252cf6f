"""From-scratch encoders: small transformers over text tokens, image/log-mel patches, table cells."""

from __future__ import annotations

import math

import torch
from torch import nn

from mmfit.models.contract import EncoderOutput, TransformerStack, masked_mean, resize_images, sincos_1d, sincos_2d
from mmfit.models.encoders.spec import EncoderSpec
from mmfit.registry import ENCODERS, EncoderInfo

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)  # pixels in [0, 1] -> about [-2, 2]


class ConvPatchEmbed(nn.Module):
    """Patches of `patch` pixels as tokens, through a stride-2 conv stem (convolutional stems
    make small vision transformers train far better on little data than a single linear patchify)."""

    def __init__(self, in_ch: int, dim: int, patch: int):
        super().__init__()
        steps = max(1, patch.bit_length() - 1)
        chans = [in_ch] + [max(16, dim // 2 ** (steps - 1 - i)) for i in range(steps)]
        layers: list[nn.Module] = []
        for i in range(steps):
            layers += [nn.Conv2d(chans[i], chans[i + 1], 3, stride=2 if patch > 1 else 1, padding=1),
                       nn.GroupNorm(math.gcd(8, chans[i + 1]), chans[i + 1]), nn.GELU()]
        layers.append(nn.Conv2d(chans[-1], dim, 1))
        self.stem = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.stem(x)  # [B, D, h, w]
        b, d, h, w = f.shape
        return f.flatten(2).transpose(1, 2) + sincos_2d(h, w, d, f.device).unsqueeze(0)


class ScratchText(nn.Module):
    def __init__(self, s: EncoderSpec):
        super().__init__()
        self.dim = s.dim
        self.embed = nn.Embedding(max(s.vocab_size, 8), s.dim, padding_idx=0)
        self.register_buffer("pos", sincos_1d(s.max_length, s.dim), persistent=False)
        self.drop = nn.Dropout(s.dropout)
        self.body = TransformerStack(s.dim, s.layers, s.heads, s.dropout)

    def forward(self, inputs: dict) -> EncoderOutput:
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        x = self.drop(self.embed(ids) + self.pos[: ids.shape[1]].unsqueeze(0))
        x = self.body(x, mask)
        return EncoderOutput(x, mask, masked_mean(x, mask))


class ScratchGrid(nn.Module):
    """Images [B,3,H,W] in [0,1], or log-mel [B,mels,frames] (one channel, standardised per clip)."""

    def __init__(self, s: EncoderSpec):
        super().__init__()
        self.dim = s.dim
        self.is_audio = s.kind == "audio"
        self.patches = ConvPatchEmbed(1 if self.is_audio else s.in_channels, s.dim, s.patch)
        self.mean, self.std = MEAN[0], STD[0]
        self.input_size = None if self.is_audio else s.input_size
        self.drop = nn.Dropout(s.dropout)
        self.body = TransformerStack(s.dim, s.layers, s.heads, s.dropout)

    def forward(self, inputs: dict) -> EncoderOutput:
        x = inputs["x"]
        if self.is_audio:
            mu = x.mean(dim=(1, 2), keepdim=True)
            sd = x.std(dim=(1, 2), keepdim=True).clamp(min=1e-3)
            x = ((x - mu) / sd).unsqueeze(1)
        else:
            x = (resize_images(x, self.input_size) - self.mean) / self.std
        t = self.drop(self.patches(x))
        mask = torch.ones(t.shape[:2], dtype=torch.bool, device=t.device)
        t = self.body(t, mask)
        return EncoderOutput(t, mask, t.mean(1))


class ScratchTabular(nn.Module):
    """Each column one token: a numeric value scales a learned vector; a category is an embedding; a
    vector column's numbers go through a linear map of their own (missing numbers are 0 once
    standardised; the token is masked only where all of them are missing)."""

    def __init__(self, s: EncoderSpec):
        super().__init__()
        self.dim = s.dim
        self.n_plain = s.n_numeric - sum(s.vector_sizes)
        self.vector_sizes = list(s.vector_sizes)
        self.num_weight = nn.Parameter(torch.randn(self.n_plain, s.dim) * 0.1)
        self.num_bias = nn.Parameter(torch.zeros(self.n_plain, s.dim))
        self.vectors = nn.ModuleList([nn.Linear(n, s.dim) for n in self.vector_sizes])
        self.cats = nn.ModuleList([nn.Embedding(n, s.dim) for n in s.cat_sizes])
        self.column = nn.Parameter(torch.randn(self.n_plain + len(self.vector_sizes) + len(s.cat_sizes), s.dim) * 0.02)
        self.body = TransformerStack(s.dim, s.layers, s.heads, s.dropout)

    def forward(self, inputs: dict) -> EncoderOutput:
        vals, cats, mask = inputs["values"], inputs["categories"], inputs["feature_mask"]
        p = self.n_plain
        toks = [vals[:, :p].unsqueeze(-1) * self.num_weight + self.num_bias] if p else []
        masks = [mask[:, :p]]
        for size, proj in zip(self.vector_sizes, self.vectors):
            toks.append(proj(vals[:, p:p + size]).unsqueeze(1))
            masks.append(mask[:, p:p + size].any(1, keepdim=True))
            p += size
        toks += [emb(cats[:, k]).unsqueeze(1) for k, emb in enumerate(self.cats)]
        masks.append(mask[:, p:])
        x = torch.cat(toks, dim=1) + self.column.unsqueeze(0)
        mask = torch.cat(masks, dim=1)
        x = self.body(x, mask)
        return EncoderOutput(x, mask, masked_mean(x, mask))


@ENCODERS.register("scratch", info=EncoderInfo(kinds=("text", "image", "audio", "tabular"),
                                               default_for=("audio", "tabular"), input_size=64, image_mean=MEAN,
                                               image_std=STD))
def build_scratch(s: EncoderSpec) -> nn.Module:
    return {"text": ScratchText, "image": ScratchGrid, "audio": ScratchGrid, "tabular": ScratchTabular}[s.kind](s)
