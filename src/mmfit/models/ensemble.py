"""An ensemble of models that read the same Batch: their heads' predictions averaged with weights.

A candidate is one head of one member: the fused head of a task, or (for the first task) the
auxiliary head of one modality, which predicts from that modality alone. The weights come from
ensemble selection on validation (Caruana et al., 2004: greedy forward selection with replacement,
so a weight is a count over the rounds, and a candidate that never helps gets none). The ensemble
is itself a model: predict, evaluate, the ablation, ONNX export and the server treat it like any
other (`ensemble_selection` lives with it so that the training-time choice and the combination
used at prediction time are the same code).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from mmfit.models.model import ModelOutput

EPS = 1e-7


def candidate_outputs(out: ModelOutput, task: str, primary: str) -> dict[str, torch.Tensor]:
    """A member's candidate heads for one task: 'fused', and 'aux:<modality>' for the first task."""
    heads = {"fused": out.logits[task]}
    if task == primary:
        heads.update({f"aux:{m}": v for m, v in out.aux_logits.items()})
    return heads


def to_scores(logits: torch.Tensor, kind: str) -> torch.Tensor:
    """What is averaged: probabilities (classification, multilabel) or the value (regression)."""
    if kind == "classification":
        return torch.softmax(logits.float(), -1)
    if kind == "multilabel":
        return torch.sigmoid(logits.float())
    return logits.float()


def from_scores(scores: torch.Tensor, kind: str) -> torch.Tensor:
    """Back to logits, so that softmax / sigmoid of the result gives the averaged probabilities."""
    if kind == "classification":
        return torch.log(scores.clamp(min=EPS))
    if kind == "multilabel":
        p = scores.clamp(EPS, 1 - EPS)
        return torch.log(p) - torch.log1p(-p)
    return scores


class EnsembleModel(nn.Module):
    """`weights[task][(member, head)]`: the share of each candidate (summing to 1 per task)."""

    def __init__(self, members: dict[str, nn.Module], weights: dict[str, dict[tuple[str, str], float]],
                 kinds: dict[str, str], primary: str):
        super().__init__()
        used = {m for w in weights.values() for (m, _), v in w.items() if v > 0}
        self.members = nn.ModuleDict({k: v for k, v in members.items() if k in used})
        self.weights, self.kinds, self.primary = weights, kinds, primary

    @property
    def modalities(self) -> list[str]:
        return list(dict.fromkeys(m for member in self.members.values() for m in member.modalities))

    @property
    def encoders(self) -> dict:
        return {f"{k}.{m}": e for k, member in self.members.items() for m, e in member.encoders.items()}

    def forward(self, inputs, present, mix=None) -> ModelOutput:
        outs = {k: member(inputs, present) for k, member in self.members.items()}
        logits = {}
        for task, w in self.weights.items():
            total = 0.0
            for (member, head), share in w.items():
                if share > 0:
                    total = total + share * to_scores(candidate_outputs(outs[member], task, self.primary)[head],
                                                      self.kinds[task])
            logits[task] = from_scores(total, self.kinds[task])
        lead = max(self.weights[self.primary].items(), key=lambda kv: kv[1])[0][0]
        return ModelOutput(logits, {}, outs[lead].fused, outs[lead].embeddings)


def ensemble_selection(scores: dict[tuple[str, str], np.ndarray], judge: Callable[[np.ndarray], float],
                       rounds: int = 25) -> dict[tuple[str, str], float]:
    """Greedy forward selection with replacement on validation: start from the best candidate, then
    add (again) whichever candidate most improves the average; stop when nothing improves it
    strictly (a judge that breaks ties, e.g. (macro-F1, -log loss), keeps refining).
    `scores`: per candidate its validation outputs (probabilities or values); `judge`: higher is
    better. -> weights (counts / rounds taken) of the candidates."""
    names = sorted(scores)
    counts = {n: 0 for n in names}
    best = max(names, key=lambda n: judge(scores[n]))
    counts[best], total, value = 1, scores[best].astype(np.float64), judge(scores[best])
    for k in range(2, rounds + 1):
        trial = {n: judge((total + scores[n]) / k) for n in names}
        n = max(names, key=lambda c: (trial[c], -names.index(c)))
        if not trial[n] > value:  # only a strict gain counts: ties would drift towards anything
            break
        counts[n] += 1
        total, value = total + scores[n], trial[n]
    used = sum(counts.values())
    return {n: c / used for n, c in counts.items()}
