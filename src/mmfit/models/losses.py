"""The multi-task objective L_total = aux_weight * sum_i L_i + lambda * sum_t w_t L_t.

L_i is modality i's auxiliary head on the primary task (rows where i is present);
L_t is task t's loss on rows that have its target (a matching task: symmetric InfoNCE over the
batch's rows that have both sides; a CTC transcriber: rows that have its audio). Every term is returned on its own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def task_loss(kind: str, logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
              label_smoothing: float = 0.0) -> torch.Tensor:
    if not bool(mask.any()):
        return logits.sum() * 0.0  # keeps the graph; no rows carry this target
    logits, target = logits[mask], target[mask]
    if kind == "matching":  # [B, 2, D]: row i's sides are the positive pair, the other rows negatives
        if len(logits) < 2:
            return logits.sum() * 0.0
        sim = logits[:, 0].float() @ logits[:, 1].float().T
        y = torch.arange(len(sim), device=sim.device)
        return (F.cross_entropy(sim, y) + F.cross_entropy(sim.T, y)) / 2
    if kind == "ctc":  # [B, frames, vocab] log-probabilities against character ids
        from mmfit.models.heads import ctc_loss

        return ctc_loss(logits, target)
    if kind == "generation":  # next-token cross-entropy, padding left out
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), target[:, 1:].reshape(-1), ignore_index=0)
    if kind == "classification":
        return F.cross_entropy(logits.float(), target, label_smoothing=label_smoothing)
    if kind == "multilabel":
        return F.binary_cross_entropy_with_logits(logits.float(), target)
    return F.mse_loss(logits[:, 0].float(), target)


def total_loss(out, batch, task_types: dict[str, str], task_weights: dict[str, float], task_lambda: float,
               aux_weight: float, label_smoothing: float = 0.0) -> dict[str, torch.Tensor]:
    terms: dict[str, torch.Tensor] = {}
    task_sum = 0.0
    for t, logits in out.logits.items():
        kind, _, source = task_types[t].partition(":")  # ctc:<audio column>: rows with that audio only
        mask = batch.target_mask[t] & batch.present[source] if source else batch.target_mask[t]
        loss = task_loss(kind, logits, batch.targets[t], mask, label_smoothing)
        terms[f"task/{t}"] = loss
        task_sum = task_sum + task_weights[t] * loss
    aux_sum = 0.0
    primary = next(iter(out.logits), None)
    for m, logits in out.aux_logits.items():
        mask = batch.target_mask[primary] & batch.present[m]
        loss = task_loss(task_types[primary], logits, batch.targets[primary], mask, label_smoothing)
        terms[f"aux/{m}"] = loss
        aux_sum = aux_sum + loss
    terms["total"] = aux_weight * aux_sum + task_lambda * task_sum
    return terms
