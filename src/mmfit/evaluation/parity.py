"""Do two models predict the same? Logits of a batch, with a modality removed, and their largest
difference: how export, quantization, pruning and merging are checked against their source."""

from __future__ import annotations

import torch

from mmfit.data.batch import Batch


def without(batch: Batch, modality: str) -> Batch:
    present = dict(batch.present)
    present[modality] = torch.zeros_like(present[modality])
    return Batch(batch.inputs, present)


@torch.no_grad()
def logits(model, batch: Batch, precision: str = "fp32") -> dict[str, torch.Tensor]:
    model.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        return {t: v.float() for t, v in model(batch.inputs, batch.present).logits.items()}


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[t] - b[t]).abs().max()) for t in a)
