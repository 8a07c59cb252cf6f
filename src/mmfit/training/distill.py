"""Knowledge distillation: a trained teacher run's outputs become soft targets for a student.

The teacher runs once, before training, over the student's training rows with its own
preprocessing (its tokenizer, its image size), so teacher and student may differ in every
encoder; rows are matched by their manifest row number. The loop then adds, per batch,

    (1 - alpha) * L_hard + alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + feature_weight * L_feat

where L_feat compares the batch's pairwise cosine similarities of the fused representations
(similarity-preserving distillation: no projection layer, so any two widths can be matched).
Multi-label tasks use sigmoid soft targets, regression the teacher's value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import pandas as pd
import torch
from torch.nn import functional as F

from mmfit.config import Config, DistillConfig
from mmfit.run.loaded import load_run
from mmfit.tasks import task_kind


class Teacher:
    def __init__(self, logits: dict[str, torch.Tensor], fused: torch.Tensor, known: torch.Tensor, types: dict):
        self.logits, self.fused, self.known, self.types = logits, fused, known, types

    @classmethod
    @torch.no_grad()
    def from_run(cls, run: Path, df: Optional[pd.DataFrame], rows: torch.Tensor, student: Config,
                 log: Callable = print) -> "Teacher":
        pred = load_run(run)
        if set(pred.cfg.data.targets) != set(student.data.targets):
            raise ValueError(f"distill.teacher {run} predicts {sorted(pred.cfg.data.targets)}, the student "
                             f"{sorted(student.data.targets)}: the tasks must be the same")
        for t, tc in student.data.targets.items():
            if pred.cfg.data.targets[t].type != tc.type:
                raise ValueError(f"distill: task {t} is {pred.cfg.data.targets[t].type} for the teacher, {tc.type} here")
        if df is None and student.data.manifest:
            pred.cfg.data.manifest = student.data.manifest
        splits = pred.data(df)
        n = int(rows.max()) + 1
        logits = {t: torch.zeros(n, p.n_outputs) for t, p in pred.pre.targets.items()}
        fused, known = None, torch.zeros(n, dtype=torch.bool)
        model = pred.model.eval()
        for data in splits.values():
            for batch in data.batches(64):
                keep = batch.rows < n
                if not keep.any():
                    continue
                out = model(batch.inputs, batch.present)
                r = batch.rows[keep]
                for t, v in out.logits.items():
                    logits[t][r] = v[keep].float()
                if fused is None:
                    fused = torch.zeros(n, out.fused.shape[1])
                fused[r] = out.fused[keep].float()
                known[r] = True
        missing = rows[~known[rows]]
        if len(missing):
            raise ValueError(f"distill: the teacher {run} could not read {len(missing)} training row(s) of the "
                             f"student (first: row {int(missing[0])}); both must read the same manifest")
        log(f"teacher {run}: soft targets for {len(rows)} training rows")
        return cls(logits, fused, known, {t: p.type for t, p in pred.pre.targets.items()})

    def terms(self, out, rows: torch.Tensor, kd: DistillConfig) -> dict[str, torch.Tensor]:
        """Distillation terms for one batch: `kd` (all tasks) and `feature` (fused similarities)."""
        dev = out.fused.device
        T = kd.temperature
        total = 0.0
        for t, s in out.logits.items():
            tl = self.logits[t][rows].to(dev)
            kind = task_kind(self.types[t])
            if kind.exclusive:
                total = total + F.kl_div(F.log_softmax(s.float() / T, -1), F.softmax(tl / T, -1),
                                         reduction="batchmean") * T * T
            elif kind.label_set:
                total = total + F.binary_cross_entropy_with_logits(s.float() / T, torch.sigmoid(tl / T)) * T * T
            else:
                total = total + F.mse_loss(s.float(), tl)
        terms = {"distill/kd": total}
        if kd.feature_weight > 0:
            terms["distill/feature"] = similarity_loss(out.fused.float(), self.fused[rows].to(dev))
        return terms


def similarity_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the two batch similarity matrices (rows L2-normalised)."""
    def gram(x):
        g = F.normalize(x, dim=1) @ F.normalize(x, dim=1).T
        return F.normalize(g, dim=1)
    return F.mse_loss(gram(student), gram(teacher)) * student.shape[0]


def combine(terms: dict[str, torch.Tensor], kd_terms: dict[str, torch.Tensor], kd: DistillConfig) -> dict:
    out = dict(terms)
    out.update(kd_terms)
    out["hard"] = terms["total"]
    out["total"] = (1 - kd.alpha) * terms["total"] + kd.alpha * kd_terms["distill/kd"] \
        + kd.feature_weight * kd_terms.get("distill/feature", 0.0)
    return out
