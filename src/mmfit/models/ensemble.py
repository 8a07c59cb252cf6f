"""An ensemble of models that read the same Batch: their heads' predictions averaged with weights.

A candidate is one head of one member: the fused head of a task, or (for the first task) the
auxiliary head of one modality, which predicts from that modality alone. The weights come from
ensemble selection on validation (Caruana et al., 2004: greedy forward selection with replacement,
so a weight is a count over the rounds, and a candidate that never helps gets none). The ensemble
is itself a model: predict, evaluate, the ablation, ONNX export and the server treat it like any
other. The weights are chosen by the recipe (recipe/selection.py `ensemble_selection`); the
combination (`to_scores`, calibrated by each candidate's temperature) is this module's, at training
time and at prediction time alike.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mmfit.models.model import ModelOutput
from mmfit.tasks import task_kind

EPS = 1e-7


def candidate_outputs(out: ModelOutput, task: str, primary: str) -> dict[str, torch.Tensor]:
    """A member's candidate heads for one task: 'fused', and 'aux:<modality>' for the first task."""
    heads = {"fused": out.logits[task]}
    if task == primary:
        heads.update({f"aux:{m}": v for m, v in out.aux_logits.items()})
    return heads


def to_scores(logits: torch.Tensor, kind: str, temperature: float = 1.0) -> torch.Tensor:
    """What is averaged: probabilities (classification, multilabel) at a temperature, or the value
    (regression)."""
    kind = task_kind(kind)
    if kind.exclusive:
        return torch.softmax(logits.float() / temperature, -1)
    if kind.label_set:
        return torch.sigmoid(logits.float() / temperature)
    return logits.float()


def fit_temperature(logits: np.ndarray, y: np.ndarray, kind: str) -> float:
    """The temperature that minimises a head's log loss on validation (Guo et al., 2017). Heads are
    calibrated before they are combined: an overconfident head would otherwise make any flat head
    look useful to the selection (averaging with it lowers the log loss without helping a decision)."""
    kind = task_kind(kind)
    if not kind.labels or not len(y):
        return 1.0
    x = torch.from_numpy(np.asarray(logits, np.float32))
    target = torch.from_numpy(np.asarray(y))
    best, best_t = float("inf"), 1.0
    for t in np.exp(np.linspace(np.log(0.2), np.log(10.0), 41)):
        if kind.exclusive:
            loss = float(torch.nn.functional.cross_entropy(x / float(t), target.long()))
        else:
            loss = float(torch.nn.functional.binary_cross_entropy_with_logits(x / float(t), target.float()))
        if loss < best:
            best, best_t = loss, float(t)
    return best_t


def from_scores(scores: torch.Tensor, kind: str) -> torch.Tensor:
    """Back to logits, so that softmax / sigmoid of the result gives the averaged probabilities."""
    kind = task_kind(kind)
    if kind.exclusive:
        return torch.log(scores.clamp(min=EPS))
    if kind.label_set:
        p = scores.clamp(EPS, 1 - EPS)
        return torch.log(p) - torch.log1p(-p)
    return scores


class EnsembleModel(nn.Module):
    """`weights[task][(member, head)]`: the share of each candidate (summing to 1 per task);
    `temperatures` the same keys: each candidate's calibration (1 where not given)."""

    def __init__(self, members: dict[str, nn.Module], weights: dict[str, dict[tuple[str, str], float]],
                 kinds: dict[str, str], primary: str, temperatures: dict | None = None):
        super().__init__()
        used = {m for w in weights.values() for (m, _), v in w.items() if v > 0}
        self.members = nn.ModuleDict({k: v for k, v in members.items() if k in used})
        self.weights, self.kinds, self.primary = weights, kinds, primary
        self.temperatures = temperatures or {}
        self.shared = self._share_frozen()

    def _share_frozen(self) -> list[tuple[str, list[str]]]:
        """Members often hold the same frozen encoder (the probe's, kept frozen by the fine-tuned
        member): one module serves them all, and runs once per batch.
        -> [(modality, members sharing one module)]."""
        from mmfit.models.finetune import is_frozen

        seen: dict[str, list[nn.Module]] = {}
        for member in self.members.values():
            for m, enc in list(member.encoders.items()):
                if is_frozen(enc):
                    same = next((c for c in seen.get(m, []) if type(c) is type(enc) and _equal(c, enc)), None)
                    if same is None:
                        seen.setdefault(m, []).append(enc)
                    else:
                        member.encoders[m] = same
        shared = []
        for m, modules in seen.items():
            for module in modules:
                ks = [k for k, member in self.members.items() if m in member.encoders and member.encoders[m] is module]
                if len(ks) > 1:
                    shared.append((m, ks))
        return shared

    @property
    def modalities(self) -> list[str]:
        return list(dict.fromkeys(m for member in self.members.values() for m in member.modalities))

    @property
    def encoders(self) -> dict:
        return {f"{k}.{m}": e for k, member in self.members.items() for m, e in member.encoders.items()}

    def forward(self, inputs, present, mix=None) -> ModelOutput:
        given = {k: inputs for k in self.members}
        for m, ks in self.shared:  # a shared frozen encoder runs once; its members take its outputs
            with torch.no_grad():
                o = self.members[ks[0]].encoders[m](inputs[m])
            for k in ks:
                given[k] = {**given[k], m: {"pooled": o.pooled, "tokens": o.tokens, "token_mask": o.mask}}
        outs = {k: member(given[k], present) for k, member in self.members.items()}
        logits = {}
        for task, w in self.weights.items():
            total = 0.0
            for (member, head), share in w.items():
                if share > 0:
                    t = self.temperatures.get(task, {}).get((member, head), 1.0)
                    total = total + share * to_scores(candidate_outputs(outs[member], task, self.primary)[head],
                                                      self.kinds[task], t)
            logits[task] = from_scores(total, self.kinds[task])
        lead = max(self.weights[self.primary].items(), key=lambda kv: kv[1])[0][0]
        return ModelOutput(logits, {}, outs[lead].fused, outs[lead].embeddings)


def _equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
