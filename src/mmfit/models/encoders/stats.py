"""`audio-stats`: hand-crafted spectral statistics of a log-mel clip, with no weights to learn.

Per mel band: the mean over time (after the clip's overall level is subtracted, so loudness does not
count), the spread over time, and the mean frame-to-frame change. A fixed description that a few
hundred clips cannot overfit, for audio where no pretrained encoder ships: the fusion and heads
learn on top of it, and as an ensemble member it is what a practitioner's first probe would use.
"""

from __future__ import annotations

import torch
from torch import nn

from mmfit.models.contract import EncoderOutput
from mmfit.models.encoders.spec import EncoderSpec
from mmfit.registry import ENCODERS, EncoderInfo

SCALE = 0.2  # log-power statistics span about +-5: brought near unit scale


class AudioStats(nn.Module):
    def __init__(self, s: EncoderSpec):
        super().__init__()
        self.dim = 3 * s.n_mels

    def forward(self, inputs: dict) -> EncoderOutput:
        x = inputs["x"]  # [B, mels, frames], natural log of mel power
        x = x - x.mean(dim=(1, 2), keepdim=True)
        delta = (x[:, :, 1:] - x[:, :, :-1]).abs().mean(2) if x.shape[2] > 1 else torch.zeros_like(x[:, :, 0])
        pooled = SCALE * torch.cat([x.mean(2), x.std(2, unbiased=False), delta], dim=1)
        mask = torch.ones(pooled.shape[0], 1, dtype=torch.bool, device=pooled.device)
        return EncoderOutput(pooled.unsqueeze(1), mask, pooled)


@ENCODERS.register("audio-stats", info=EncoderInfo(kinds=("audio",)))
def build_audio_stats(s: EncoderSpec) -> nn.Module:
    return AudioStats(s)


class TableStats(nn.Module):
    """`table-stats`: a table as it is, for heads that read features directly (the convex member's
    logistic regression, the trees): the standardised numbers (0 where missing), an indicator of each
    missing number, and each category one-hot. No weights."""

    def __init__(self, s: EncoderSpec):
        super().__init__()
        self.n_numeric, self.cat_sizes = s.n_numeric, list(s.cat_sizes)
        self.dim = 2 * s.n_numeric + sum(self.cat_sizes)

    def forward(self, inputs: dict) -> EncoderOutput:
        vals, cats, mask = inputs["values"], inputs["categories"], inputs["feature_mask"]
        parts = [vals.float(), (~mask[:, : self.n_numeric].bool()).float()]
        parts += [nn.functional.one_hot(cats[:, k].long().clamp(min=0), n).float() * mask[:, self.n_numeric + k:
                                                                                            self.n_numeric + k + 1]
                  for k, n in enumerate(self.cat_sizes)]
        pooled = torch.cat(parts, 1) if parts else vals.new_zeros(vals.shape[0], 0)
        ones = torch.ones(pooled.shape[0], 1, dtype=torch.bool, device=pooled.device)
        return EncoderOutput(pooled.unsqueeze(1), ones, pooled)


@ENCODERS.register("table-stats", info=EncoderInfo(kinds=("tabular",)))
def build_table_stats(s: EncoderSpec) -> nn.Module:
    return TableStats(s)
