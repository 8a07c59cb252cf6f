"""Do two models predict the same? Logits of a batch, with a modality removed, and their largest
difference: how export, quantization, pruning and merging are checked against their source."""

from __future__ import annotations

from contextlib import contextmanager

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


@contextmanager
def encoders_run_once(model: torch.nn.Module):
    """Within it, each encoder of `model` (an ensemble's members' included) computes its outputs once
    per input tensors and hands the same outputs back when given them again. The variants of a
    parity check differ only in which modalities are present, which no encoder reads, so the image
    and text backbones run once instead of once per variant. Yields `forget()`, which drops the outputs
    kept so far (a pass over many batches forgets each batch's once its variants are done)."""
    wrapped, kept = {}, []
    for module in model.modules():
        if isinstance(getattr(module, "encoders", None), torch.nn.ModuleDict):
            for enc in module.encoders.values():
                wrapped.setdefault(id(enc), enc)
    for enc in wrapped.values():
        seen: dict = {}
        kept.append(seen)
        enc.forward = _memo(enc.forward, seen)

    def forget() -> None:
        for seen in kept:
            seen.clear()

    try:
        yield forget
    finally:
        for enc in wrapped.values():
            del enc.forward  # the class's forward again


def _memo(forward, seen: dict):
    def run(inputs):
        key = tuple((k, id(v)) for k, v in sorted(inputs.items()))
        if key not in seen:
            seen[key] = (inputs, forward(inputs))  # the inputs kept: their ids stay theirs
        return seen[key][1]
    return run
