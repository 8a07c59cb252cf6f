"""The multi-task objective L_total = aux_weight * sum_i L_i + lambda * sum_t w_t L_t.

L_i is modality i's auxiliary head on the primary task (rows where i is present);
L_t is task t's loss on rows that have its target (a matching task: symmetric InfoNCE over the
batch's rows that have both sides; a CTC transcriber: rows that have its audio). Every term is returned on its own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def task_loss(loss: str, logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
              label_smoothing: float = 0.0) -> torch.Tensor:
    """One task's loss on the rows in `mask`; `loss` is a task kind's (mmfit/tasks.py: TaskKind.loss) or ctc."""
    if not bool(mask.any()):
        return logits.sum() * 0.0  # keeps the graph; no rows carry this target
    logits, target = logits[mask], target[mask]
    if loss == "contrastive":  # [B, 2, D]: row i's sides are the positive pair, the other rows negatives
        if len(logits) < 2:
            return logits.sum() * 0.0
        sim = logits[:, 0].float() @ logits[:, 1].float().T
        y = torch.arange(len(sim), device=sim.device)
        return (F.cross_entropy(sim, y) + F.cross_entropy(sim.T, y)) / 2
    if loss == "ctc":  # [B, frames, vocab] log-probabilities against character ids
        from mmfit.models.heads import ctc_loss

        return ctc_loss(logits, target)
    if loss == "next_token":  # next-token cross-entropy, padding left out
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), target[:, 1:].reshape(-1), ignore_index=0)
    if loss == "cross_entropy":
        return F.cross_entropy(logits.float(), target, label_smoothing=label_smoothing)
    if loss == "binary_cross_entropy":
        return F.binary_cross_entropy_with_logits(logits.float(), target)
    if loss == "mse":
        return F.mse_loss(logits[:, 0].float(), target)
    raise ValueError(f"loss {loss!r}: not one of contrastive, ctc, next_token, cross_entropy, "
                     "binary_cross_entropy, mse")


def total_loss(out, batch, losses: dict[str, str], task_weights: dict[str, float], task_lambda: float,
               aux_weight: float, label_smoothing: float = 0.0) -> dict[str, torch.Tensor]:
    """`losses`: each task's loss name (TargetProcessor.loss_kind: its kind's, or ctc:<audio column>)."""
    terms: dict[str, torch.Tensor] = {}
    task_sum = 0.0
    for t, logits in out.logits.items():
        loss_name, _, source = losses[t].partition(":")  # ctc:<audio column>: rows with that audio only
        mask = batch.target_mask[t] & batch.present[source] if source else batch.target_mask[t]
        loss = task_loss(loss_name, logits, batch.targets[t], mask, label_smoothing)
        terms[f"task/{t}"] = loss
        task_sum = task_sum + task_weights[t] * loss
    aux_sum = 0.0
    primary = next(iter(out.logits), None)
    for m, logits in out.aux_logits.items():
        mask = batch.target_mask[primary] & batch.present[m]
        loss = task_loss(losses[primary], logits, batch.targets[primary], mask, label_smoothing)
        terms[f"aux/{m}"] = loss
        aux_sum = aux_sum + loss
    terms["total"] = aux_weight * aux_sum + task_lambda * task_sum
    return terms
