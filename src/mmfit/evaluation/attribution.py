"""Explanations inside each modality: integrated gradients (Sundararajan et al. 2017).

For one row and the first classification / regression task's output f (the predicted class's
logit, or the value), the attribution of input feature i is (x_i - x'_i) times the mean gradient of
f along the straight path from a baseline x' to x (midpoint rule, `steps` points). Completeness:
the attributions of all inputs add up to f(x) - f(x'), the whole move from the baseline.

Baselines, one per kind: a black image (a video: black frames); for a log-mel clip, its own average
spectrum in every frame
(a constant baseline such as silence would leave nothing to integrate: encoders standardise each
clip, so scaling its deviations from a constant changes nothing they see); text
token embeddings of zero (the path scales the embeddings, through a hook on the encoder's embedding
layer); numbers at their training mean (0 once standardised). Categories, being lookups, have no
path: they stay as they are and get no attribution. Absent modalities stay absent.

Per row -> `maps`: an image heat map [H, W] (summed over colour channels), a video's frames' maps
side by side [H, frames x W] (`frames` says how many), and an audio time-frequency map
[mels, frames] per column; `tokens`: each text token's score; `numbers`: each
number's score; `modalities`: each modality's summed attribution and its share of them all
(|sum| / total of |sum|): which modality the output leaned on.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from mmfit.models.adversarial import embedding_layer, precomputed
from mmfit.tasks import task_kind


def _target(out, task: str, kind: str, index: Optional[torch.Tensor]) -> torch.Tensor:
    logits = out.logits[task].float()
    if task_kind(kind).labels:
        return logits.gather(1, index.view(-1, 1)).squeeze(1)
    return logits[:, 0]


@torch.no_grad()
def _index(model, batch, task: str, kind: str) -> Optional[torch.Tensor]:
    if not task_kind(kind).labels:
        return None
    return model(batch.inputs, batch.present).logits[task].float().argmax(1)


def integrated_gradients(model, batch, kinds: dict[str, str], task: str, kind: str, steps: int = 32) -> dict:
    """-> {"attributions": {m: tensor shaped like its input (text: [B, L] per token; tabular:
    [B, numeric columns])}, "delta": f(x) - f(x') per row [B], "target": the class explained or None}."""
    model.eval()
    index = _index(model, batch, task, kind)
    paths = {m: k for m, k in kinds.items() if m in batch.inputs and not precomputed(batch.inputs[m])}
    x = {m: batch.inputs[m]["x"].float() for m, k in paths.items() if k in ("image", "audio", "video")}
    base = {m: v.mean(dim=2, keepdim=True).expand_as(v) if paths[m] == "audio" else torch.zeros_like(v)
            for m, v in x.items()}
    grads: dict[str, torch.Tensor] = {}
    emb: dict[str, torch.Tensor] = {}

    def f_at(alpha: float) -> tuple[torch.Tensor, dict]:
        leaves, inputs, handles = {}, dict(batch.inputs), []
        for m, v in x.items():
            leaves[m] = (base[m] + alpha * (v - base[m])).requires_grad_(True)
            inputs[m] = {**batch.inputs[m], "x": leaves[m]}
        if "tabular" in paths:
            vals = batch.inputs["tabular"]["values"].float()
            leaves["tabular"] = (alpha * vals).requires_grad_(True)
            inputs["tabular"] = {**batch.inputs["tabular"], "values": leaves["tabular"]}
        for m, k in paths.items():
            layer = embedding_layer(model.encoders[m]) if k == "text" else None
            if layer is not None:
                def hook(module, args, output, m=m):
                    emb[m] = output.detach().float()
                    leaves[m] = (alpha * emb[m]).requires_grad_(True)
                    return leaves[m].to(output.dtype)
                handles.append(layer.register_forward_hook(hook))
        model.input_grad = True
        try:
            with torch.enable_grad():
                f = _target(model(inputs, batch.present), task, kind, index)
                gs = torch.autograd.grad(f.sum(), list(leaves.values()), allow_unused=True)
        finally:
            model.input_grad = False
            for h in handles:
                h.remove()
        return f.detach(), {m: g for m, g in zip(leaves, gs) if g is not None}

    f0, _ = f_at(0.0)
    for k in range(steps):
        _, g = f_at((k + 0.5) / steps)
        for m, v in g.items():
            grads[m] = grads.get(m, 0) + v.float() / steps
    f1, _ = f_at(1.0)
    attributions = {}
    for m, g in grads.items():
        if m in x:
            attributions[m] = (x[m] - base[m]) * g
        elif m == "tabular":
            attributions[m] = batch.inputs["tabular"]["values"].float() * g
        else:  # text: per token, summed over the embedding
            attributions[m] = (emb[m] * g).sum(-1) * batch.inputs[m]["attention_mask"].float()
    return {"attributions": attributions, "delta": f1 - f0, "target": index}


def explainable(model) -> bool:
    """Gradients reach the inputs: one MultimodalModel (an ensemble or an ONNX graph has none to give)."""
    from mmfit.models.model import MultimodalModel

    return isinstance(model, MultimodalModel)


def explain_rows(pred, data, steps: int = 32, batch_size: int = 16) -> list[dict]:
    """A TensorData's rows (or a list of Batches) -> one explanation each (see the module docstring)."""
    from mmfit.config import modality_kinds

    task = next((t for t, p in pred.pre.targets.items() if p.kind.per_row), None)
    if task is None or not explainable(pred.model):
        raise ValueError("explanations need a classification, multi-label or regression task of one torch model "
                         "(not an ensemble or an ONNX graph)")
    proc = pred.pre.targets[task]
    kinds = modality_kinds(pred.cfg)
    out = []
    for batch in data.batches(batch_size) if hasattr(data, "batches") else data:  # TensorData, or Batches
        batch = batch.to(pred.device)
        r = integrated_gradients(pred.model, batch, kinds, task, proc.type, steps)
        for i in range(batch.size):
            row = {"task": task, "explained": proc.classes[int(r["target"][i])] if r["target"] is not None else "value",
                   "delta": float(r["delta"][i]), "modalities": {}, "maps": {}, "tokens": {}, "numbers": {},
                   "frames": {}}
            sums = {}
            for m, a in r["attributions"].items():
                present = bool(batch.present[m][i])
                sums[m] = float(a[i].sum()) if present else 0.0
                if not present:
                    continue
                if kinds[m] == "image":  # [H, W], the colour channels summed
                    row["maps"][m] = a[i].sum(0).cpu().numpy()
                elif kinds[m] == "video":  # [H, frames x W]: the frames side by side
                    t, _, h, w = a[i].shape
                    row["maps"][m] = a[i].sum(1).permute(1, 0, 2).reshape(h, t * w).cpu().numpy()
                    row["frames"][m] = t
                elif kinds[m] == "audio":  # [mels, frames]
                    row["maps"][m] = a[i].cpu().numpy()
                elif kinds[m] == "text":
                    ids = batch.inputs[m]["input_ids"][i]
                    keep = batch.inputs[m]["attention_mask"][i].bool()
                    row["tokens"][m] = list(zip(_tokens(pred.pre.texts[m], ids[keep].tolist()), a[i][keep].tolist()))
                elif kinds[m] == "tabular":
                    row["numbers"] = pred.pre.tabular.by_column(a[i].tolist())
            total = sum(abs(v) for v in sums.values())
            row["modalities"] = {m: {"sum": v, "share": abs(v) / total if total > 0 else 0.0} for m, v in sums.items()}
            out.append(row)
    return out


def _tokens(proc, ids: list[int]) -> list[str]:
    t = proc.tokenizer
    if hasattr(t, "id_to_token"):
        return [t.id_to_token(i) or "?" for i in ids]
    return list(t.convert_ids_to_tokens(ids))


def to_json(row: dict, max_side: int = 64) -> dict:
    """An explanation for JSON: maps as nested lists, summed over blocks to at most `max_side` per side."""
    out = dict(row)
    maps = {}
    for m, v in row["maps"].items():  # a video's filmstrip: each frame to at most max_side
        f = max(1, int(np.ceil(max(v.shape[0], v.shape[1] / row.get("frames", {}).get(m, 1)) / max_side)))
        h, w = (v.shape[0] // f) * f, (v.shape[1] // f) * f
        maps[m] = np.round(v[:h, :w].reshape(h // f, f, w // f, f).sum((1, 3)) if f > 1 else v, 6).tolist()
    out["maps"] = maps
    out["tokens"] = {m: [{"token": t, "score": s} for t, s in toks] for m, toks in row["tokens"].items()}
    return out
