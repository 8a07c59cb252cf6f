"""Mixup on encoder outputs: a model concern (the Augmenter only draws which rows pair up and how much).

Row i of every modality's EncoderOutput becomes lam * row i + (1 - lam) * row perm[i], so text and
categories mix too (they cannot as raw ids); the training loop mixes the targets with the same weight.
"""

from __future__ import annotations

import torch

from mmfit.models.contract import EncoderOutput


def mixed_presence(present: dict[str, torch.Tensor], perm: torch.Tensor) -> dict[str, torch.Tensor]:
    """After mixup a row has a modality when either of its pair has it."""
    return {m: p | p[perm.to(p.device)] for m, p in present.items()}


def mix_outputs(outputs: dict, present: dict[str, torch.Tensor], perm: torch.Tensor, lam: torch.Tensor):
    """Mixup on encoder outputs: row i becomes lam * row i + (1 - lam) * row perm[i], per modality.
    Where only one of the pair has the modality, that one is used whole; present = either has it."""
    perm = perm.to(next(iter(present.values())).device)
    mixed = {}
    for m, o in outputs.items():
        pa = present[m].to(o.pooled.dtype)
        pb = pa[perm]
        wa, wb = lam.to(pa) * pa, (1 - lam.to(pa)) * pb
        s = wa + wb
        wa = torch.where(s > 0, wa / s.clamp(min=1e-12), torch.ones_like(wa))
        wb = torch.where(s > 0, wb / s.clamp(min=1e-12), torch.zeros_like(wb))
        tokens = wa.view(-1, 1, 1) * o.tokens + wb.view(-1, 1, 1) * o.tokens[perm]
        mask = (o.mask & (wa > 0).unsqueeze(1)) | (o.mask[perm] & (wb > 0).unsqueeze(1))
        pooled = wa.view(-1, 1) * o.pooled + wb.view(-1, 1) * o.pooled[perm]
        mixed[m] = EncoderOutput(tokens, mask, pooled)
    return mixed, mixed_presence(present, perm)
