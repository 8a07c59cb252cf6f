"""Run a model over a split, compute every metric, and the modality ablation."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable, Iterable, Optional

import numpy as np
import torch

from mmfit.data.batch import TensorData
from mmfit.evaluation.metrics import retrieval_metrics, task_metrics


def predict_data(model, data: TensorData, pre, batch_size: int = 64, device="cpu", drop: Iterable[str] = (),
                 precision: str = "fp32", forward: Optional[Callable] = None) -> dict:
    """-> {task: {"output": probs or values (original units), "y": targets, "mask": has target}}.
    `forward(batch)` replaces the plain pass (an attack's perturbed one: evaluation/robustness.py)."""
    return predict_variants(model, data, pre, [tuple(drop)], batch_size, device, precision, forward)[0]


@torch.no_grad()
def predict_variants(model, data: TensorData, pre, drops: list[tuple[str, ...]], batch_size: int = 64, device="cpu",
                     precision: str = "fp32", forward: Optional[Callable] = None) -> list[dict]:
    """`predict_data` once per set of modalities to drop, in one pass over the data: the variants differ
    only in which modalities are marked absent, which no encoder reads, so with several variants
    each batch's encoders run once (`encoders_run_once`, forgotten after the batch)."""
    from mmfit.evaluation.parity import encoders_run_once

    model.eval()
    outs: list[dict[str, list]] = [{t: [] for t in pre.targets} for _ in drops]
    writes = [t for t, p in pre.targets.items() if p.kind.writes]
    share = len(drops) > 1 and forward is None and isinstance(model, torch.nn.Module)  # not an ONNX graph
    memo = encoders_run_once(model) if share else contextlib.nullcontext(lambda: None)
    with memo as forget:
        for batch in data.batches(batch_size):
            batch = batch.to(device)
            for drop, got in zip(drops, outs):
                present = {m: torch.zeros_like(v) if m in drop else v for m, v in batch.present.items()}
                b = dataclasses.replace(batch, present=present)
                with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16,
                                    enabled=precision == "bf16"):
                    out = forward(b) if forward is not None else model(b.inputs, b.present)
                    for t in writes:  # decoded from the inputs alone, never from the reference
                        _, start, end = pre.targets[t].specials()
                        ids = model.generate(b.inputs, b.present, t, start, end, pre.targets[t].cfg.beam)
                        got[t].extend(pre.targets[t].decode(r) for r in ids.cpu().tolist())
                for t, logits in out.logits.items():
                    got[t].append(logits.float().cpu())
            forget()
    return [_results(got, data, pre) for got in outs]


def _results(outs: dict[str, list], data: TensorData, pre) -> dict:
    result = {}
    for t, proc in pre.targets.items():
        if proc.kind.writes:  # texts; the references decoded the same way
            y = [proc.reference(r) for r in data.targets[t].tolist()] if t in data.targets else None
            mask = data.target_mask[t].numpy() if t in data.target_mask else np.zeros(len(data), bool)
            result[t] = {"output": np.array(outs[t], dtype=object), "y": None if y is None else np.array(y, dtype=object),
                         "mask": mask}
            continue
        logits = torch.cat(outs[t]) if outs[t] else torch.zeros(0, proc.n_outputs)
        if proc.kind.paired:  # each row's two sides as unit vectors [N, 2, D]
            output = torch.nn.functional.normalize(logits, dim=-1).numpy() if len(logits) else np.zeros((0, 2, 1))
        else:
            output = outputs_from_logits(logits, proc)
        y = data.targets[t].numpy() if t in data.targets else None
        mask = data.target_mask[t].numpy() if t in data.target_mask else np.zeros(len(data), bool)
        if y is not None and proc.kind.numeric:
            y = y * proc.std + proc.mean
        result[t] = {"output": output, "y": y, "mask": mask}
    return result


@torch.no_grad()
def embed_data(model, data: TensorData, batch_size: int = 64, device="cpu", precision: str = "fp32",
               modality=None):
    """Each row's representation: the fused vector the heads read ([N, D]), or with `modality` that
    modality's own pooled embedding (an ensemble: its leading member's); with a list of modalities,
    {modality: [N, D]} from one pass over the data."""
    model.eval()
    many = isinstance(modality, (list, tuple))
    wanted = list(modality) if many else [modality]
    parts: dict = {m: [] for m in wanted}
    for batch in data.batches(batch_size):
        batch = batch.to(device)
        with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16,
                            enabled=precision == "bf16"):
            out = model(batch.inputs, batch.present)
        for m in wanted:
            if m is None:
                parts[m].append(out.fused.float().cpu())
            elif m in out.embeddings:
                parts[m].append(out.embeddings[m].float().cpu())
            else:
                raise ValueError(f"modality {m!r}: this model embeds {', '.join(out.embeddings) or 'none'}")
    got = {m: torch.cat(p).numpy() if p else np.zeros((0, 0), np.float32) for m, p in parts.items()}
    return got if many else got[modality]


def outputs_from_logits(logits: torch.Tensor, proc) -> np.ndarray:
    """A classification, multilabel or regression head's logits as what predictions report: class
    probabilities, label probabilities, or the value in the target's own units."""
    if proc.kind.exclusive:
        return torch.softmax(logits, -1).numpy()
    if proc.kind.label_set:
        return torch.sigmoid(logits).numpy()
    return logits[:, 0].numpy() * proc.std + proc.mean


def metrics_from_predictions(preds: dict, pre, full: bool = False) -> dict:
    out = {}
    for t, r in preds.items():
        if r["y"] is None or not r["mask"].any():
            continue
        proc = pre.targets[t]
        m = r["mask"]
        if proc.kind.paired:  # named by its columns: image->text, text->image
            out[t] = retrieval_metrics(r["output"][m], full, tuple(proc.cfg.between))
        else:
            out[t] = task_metrics(proc.kind, r["y"][m], r["output"][m], proc.classes, full)
    return out


def evaluate_data(model, data: TensorData, pre, batch_size=64, device="cpu", ablation=True,
                  precision="fp32") -> dict:
    """Full metrics, plus (ablation) the same metrics with each modality masked out as absent, and with
    each modality alone (all the variants in one pass over the data, the encoders run once a batch)."""
    mods = list(model.modalities)
    drops = [()]
    if ablation and len(mods) > 1:
        drops += [(m,) for m in mods] + [tuple(o for o in mods if o != m) for m in mods]
    preds = predict_variants(model, data, pre, drops, batch_size, device, precision)
    result = {"metrics": metrics_from_predictions(preds[0], pre, full=True)}
    result["modality_presence"] = {m: float(v.float().mean()) for m, v in data.present.items()}
    if len(drops) > 1:
        k = len(mods)
        result["ablation"] = {f"without_{m}": metrics_from_predictions(p, pre, full=False)
                              for m, p in zip(mods, preds[1:1 + k])}
        result["ablation"].update({f"only_{m}": metrics_from_predictions(p, pre, full=False)
                                   for m, p in zip(mods, preds[1 + k:])})
    return result
