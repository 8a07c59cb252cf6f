"""The recipe's choice among its members, on validation only.

Every member's candidate heads (its fused head and, for the first task, each modality's own head) give
logits on val and test (`member_logits`, `condition_logits`; a cross-fitted member's val logits are its
out-of-fold ones: `out_of_fold`); each is calibrated by a temperature on validation (`calibrate`);
`ensemble_selection` (Caruana et al., 2004) weighs them by the validation log loss (or squared error)
of the mixture (`select`); `ensemble_evaluation` scores the weighted mixture on a split, with the
modality ablation on test.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch

from mmfit.data.cache import FeatureCache
from mmfit.evaluation.metrics import task_metrics
from mmfit.models.ensemble import candidate_outputs, fit_temperature, to_scores
from mmfit.run.layout import CANDIDATES, OOF
from mmfit.run.loaded import load_run
from mmfit.run.store import Run
from mmfit.tasks import TaskKind, task_kind
from mmfit.training.crossfit import oof_logits
from mmfit.training.embeddings import cache_outputs, cached_modalities


@torch.no_grad()
def _logits(model, data, pre, drop=()) -> dict[str, dict[str, np.ndarray]]:
    """Every candidate head's logits (or standardised values) over a split."""
    model.eval()
    device = next(model.parameters()).device
    primary = next(iter(pre.targets))
    out: dict[str, dict[str, list]] = {}
    for batch in data.batches(128):
        batch = batch.to(device)
        present = {m: (torch.zeros_like(p) if m in drop else p) for m, p in batch.present.items()}
        res = model(batch.inputs, present)
        for t, proc in pre.targets.items():
            for head, logits in candidate_outputs(res, t, primary).items():
                out.setdefault(t, {}).setdefault(head, []).append(logits.float().cpu().numpy())
    return {t: {h: np.concatenate(v) for h, v in hs.items()} for t, hs in out.items()}


def loaded_with_outputs(run: Run, cache: Optional[FeatureCache] = None, df=None) -> tuple:
    """A trained member, its splits (from its manifest, or `df` where it was trained from a
    DataFrame or a class folder) with its frozen encoders' outputs put in from the embedding cache
    (computed where missing) -> (loaded run, splits, frozen modalities)."""
    loaded = load_run(run)
    splits = loaded.data(df)
    frozen = cached_modalities(loaded.model, lambda m: False)
    cache_outputs(loaded.model, splits, frozen, cache or FeatureCache(loaded.cfg.data.cache_dir),
                  loaded.cfg.data.shard_rows, loaded.cfg.model.fusion == "attention", "cpu", log=lambda *a: None)
    return loaded, splits, frozen


def member_logits(run: Run, conditions: list[tuple[str, list[str]]], cache: FeatureCache, log: Callable,
                  df=None) -> dict:
    """A trained member's candidate logits: with all modalities ('all') on val and test, and under
    each other (ablation) condition on test, where the ensemble's ablation is reported
    -> {condition: {split: {task: {head: logits}}}}, and the splits."""
    loaded, splits, _ = loaded_with_outputs(run, cache, df)
    return condition_logits(loaded.model, splits, loaded.pre, conditions), splits, loaded.pre


def condition_logits(model, splits: dict, pre, conditions: list[tuple[str, list[str]]]) -> dict:
    """{condition: {split: {task: {head: logits}}}}: val and test with all modalities, test alone under
    the other conditions."""
    return {name: {s: _logits(model, splits[s], pre, drop) for s in ("val", "test")
                   if len(splits[s]) and (name == "all" or s == "test")} for name, drop in conditions}


def out_of_fold(run: Run, val) -> dict[str, dict[str, np.ndarray]]:
    """A cross-fitted member's candidate logits on the val rows from its out-of-fold predictions
    (RUN/oof.npz), in the val split's row order -> {task: {head: logits}}."""
    return oof_logits(run.read_arrays(OOF), val.rows.numpy())


def save_candidates(run: Run, logits: dict, splits: dict) -> None:
    """A member's candidate logits with all modalities and the targets, on val and test, into
    RUN/candidates.npz ('logits/<split>/<task>/<head>', 'y/<split>/<task>', 'mask/<split>/<task>')."""
    arrays = {}
    for s, ts in logits["all"].items():
        for t, hs in ts.items():
            arrays.update({f"logits/{s}/{t}/{h}": v for h, v in hs.items()})
            arrays[f"y/{s}/{t}"] = splits[s].targets[t].numpy()
            arrays[f"mask/{s}/{t}"] = splits[s].target_mask[t].numpy()
    run.write_arrays(CANDIDATES, arrays)


def _loss(kind: str | TaskKind, y: np.ndarray, mask: np.ndarray) -> Callable[[np.ndarray], float]:
    """A candidate's (or a mixture's) validation loss: log loss of the (calibrated) probabilities,
    or the mean squared error of values. A proper score and a smooth one: on a few hundred rows
    macro-F1 moves in steps, and the selection would stop at the first plateau."""
    kind = task_kind(kind)

    def loss(scores: np.ndarray) -> float:
        p, t = scores[mask], y[mask]
        if kind.numeric:
            return float(((p - t) ** 2).mean())
        p = np.clip(p, 1e-7, 1 - 1e-7)
        if kind.exclusive:
            return float(-np.log(p[np.arange(len(p)), t.astype(int)]).mean())
        return float(-(t * np.log(p) + (1 - t) * np.log(1 - p)).mean())

    return loss


def calibrate(logits: dict, splits: dict, pre) -> tuple[dict, dict]:
    """Each candidate's temperature, fitted on validation -> (temperatures {task: {(member, head): T}},
    scores: the logits turned into calibrated probabilities (or values), in the shape of `logits`)."""
    val = splits["val"]
    temps: dict = {}
    for t, proc in pre.targets.items():
        y, mask = val.targets[t].numpy(), val.target_mask[t].numpy()
        temps[t] = {(k, h): fit_temperature(v[mask], y[mask], proc.type)
                    for k, lg in logits.items() for h, v in lg["all"]["val"][t].items()}
    return temps, {k: to_member_scores(lg, k, temps, pre) for k, lg in logits.items()}


def to_member_scores(logits: dict, member: str, temps: dict, pre) -> dict:
    """One member's logits {condition: {split: {task: {head: logits}}}} as calibrated scores, under the
    temperatures fitted for `member` (a refit member takes those of the member it repeats)."""
    return {c: {s: {t: {h: to_scores(torch.from_numpy(v), pre.targets[t].type, temps[t][(member, h)]).numpy()
                        for h, v in hs.items()} for t, hs in ts.items()} for s, ts in ss.items()}
            for c, ss in logits.items()}


def select(scores: dict, splits: dict, pre) -> tuple[dict, dict]:
    """Ensemble selection per task on validation, by the loss of the mixture -> (weights
    {task: {(member, head): w}}, the candidates' validation metric and loss)."""
    weights, report = {}, {}
    val = splits["val"]
    for t, proc in pre.targets.items():
        y, mask = val.targets[t].numpy(), val.target_mask[t].numpy()
        cands = {(k, h): v for k, sc in scores.items() for h, v in sc["all"]["val"][t].items()}
        loss, key = _loss(proc.kind, y, mask), proc.kind.metric
        report[t] = {f"{k}/{h}": {key: float(task_metrics(proc.kind, y[mask], v[mask], proc.classes)[key]),
                                  "loss": loss(v)} for (k, h), v in cands.items()}
        weights[t] = ensemble_selection(cands, lambda v: -loss(v))
    return weights, report


def _combined(scores: dict, weights: dict, condition: str, split: str) -> dict[str, np.ndarray]:
    return {t: sum(w * scores[k][condition][split][t][h] for (k, h), w in ws.items() if w > 0)
            for t, ws in weights.items()}


def ensemble_evaluation(scores: dict, weights: dict, data, pre, split: str, conditions) -> dict:
    """Metrics of the weighted ensemble on a split (with the ablation on test), from the members'
    candidate outputs: what evaluation.predict.evaluate_data gives for a single model."""
    from mmfit.evaluation.predict import metrics_from_predictions

    def preds(condition):
        out = {}
        for t, v in _combined(scores, weights, condition, split).items():
            proc = pre.targets[t]
            y = data.targets[t].numpy()
            if proc.kind.numeric:
                v, y = v * proc.std + proc.mean, y * proc.std + proc.mean
            out[t] = {"output": v, "y": y, "mask": data.target_mask[t].numpy()}
        return out

    result = {"metrics": metrics_from_predictions(preds("all"), pre, full=True),
              "modality_presence": {m: float(v.float().mean()) for m, v in data.present.items()}}
    if split == "test" and len(conditions) > 1:
        result["ablation"] = {name: metrics_from_predictions(preds(name), pre) for name, _ in conditions[1:]}
    return result


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
