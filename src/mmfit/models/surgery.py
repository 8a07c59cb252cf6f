"""Changing what a model is, in place: layers cut to fewer units, a freshly built model resized to a
pruned run's tensor shapes, and the weights magnitude pruning ranks (and the masks that keep them
at zero). optimize/prune.py decides *which* units go; this module does the cutting.

A pruned run stores ordinary tensors of the smaller shapes; `conform_to_state` resizes a freshly
built model to them before loading, so nothing about the pruning needs to be pickled.
"""

from __future__ import annotations

import torch
from torch import nn

PRUNABLE = (nn.Linear, nn.Conv2d)


def magnitude_targets(model) -> dict[str, nn.Parameter]:
    """Weight matrices of encoders and fusion (not embeddings, norms, biases or the small task heads)."""
    out = {}
    for prefix in ("encoders", "fusion"):
        for name, mod in getattr(model, prefix).named_modules():
            if isinstance(mod, PRUNABLE) and mod.weight.ndim >= 2:
                out[f"{prefix}.{name}.weight"] = mod.weight
    return out


def sparsity_masks(model) -> dict[str, torch.Tensor]:
    """Where pruned weights sit (exact zeros), so recovery training can keep them at zero."""
    return {n: p.detach() == 0 for n, p in magnitude_targets(model).items() if bool((p == 0).any())}


@torch.no_grad()
def apply_masks(model, masks: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    for n, m in masks.items():
        params[n].masked_fill_(m, 0.0)


def _param(t: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(t.detach().clone().contiguous())


def _slice_weight(mod: nn.Module, out_idx, in_idx, out_attr: str, in_attr: str) -> None:
    """Keep output units `out_idx` (weight rows and bias) and inputs `in_idx` (weight columns)."""
    w = mod.weight
    if out_idx is not None:
        w = w[out_idx]
        if mod.bias is not None:
            mod.bias = _param(mod.bias[out_idx])
        setattr(mod, out_attr, len(out_idx))
    if in_idx is not None:
        w = w[:, in_idx]
        setattr(mod, in_attr, len(in_idx))
    mod.weight = _param(w)


def shrink_linear(lin: nn.Linear, out_idx=None, in_idx=None) -> None:
    _slice_weight(lin, out_idx, in_idx, "out_features", "in_features")


def shrink_conv(conv: nn.Conv2d, out_idx=None, in_idx=None) -> None:
    depthwise = conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels
    _slice_weight(conv, out_idx, None if depthwise else in_idx, "out_channels", "in_channels")
    if depthwise:  # one filter per channel: inputs go with the outputs
        conv.in_channels = conv.groups = conv.out_channels


def shrink_norm(norm: nn.Module, idx) -> None:
    for attr in ("weight", "bias"):
        if getattr(norm, attr, None) is not None:
            setattr(norm, attr, _param(getattr(norm, attr)[idx]))
    for attr in ("running_mean", "running_var"):
        if getattr(norm, attr, None) is not None:
            setattr(norm, attr, getattr(norm, attr)[idx].clone())
    if isinstance(norm, nn.BatchNorm2d):
        norm.num_features = len(idx)
    else:
        norm.normalized_shape = (len(idx),)


def shrink_group_norm(norm: nn.GroupNorm, idx, groups: int) -> None:
    norm.weight, norm.bias = _param(norm.weight[idx]), _param(norm.bias[idx])
    norm.num_channels, norm.num_groups = len(idx), groups


def hf_attention(module: nn.Module):
    """BERT-style attention blocks: (.self with query/key/value and a head size, .output.dense)."""
    for mod in module.modules():
        s = getattr(mod, "self", None)
        if s is not None and all(isinstance(getattr(s, a, None), nn.Linear) for a in ("query", "key", "value")) \
                and hasattr(s, "attention_head_size") and isinstance(getattr(mod.output, "dense", None), nn.Linear):
            yield s, mod.output.dense


def set_heads(att: nn.Module) -> None:
    att.num_attention_heads = att.query.out_features // att.attention_head_size
    att.all_head_size = att.query.out_features


@torch.no_grad()
def conform_to_state(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Resize Linear / Conv2d / norm layers of a freshly built model to the (smaller) shapes in
    `state`, as a structured-pruned run saved them; returns the resized module names."""
    resized = []
    for name, mod in model.named_modules():
        w = state.get(f"{name}.weight")
        if w is None or not hasattr(mod, "weight") or mod.weight is None or w.shape == mod.weight.shape:
            continue
        if isinstance(mod, nn.Linear):
            shrink_linear(mod, out_idx=torch.arange(w.shape[0]), in_idx=torch.arange(w.shape[1]))
        elif isinstance(mod, nn.Conv2d):
            dw = mod.groups > 1 and mod.groups == mod.in_channels == mod.out_channels
            shrink_conv(mod, out_idx=torch.arange(w.shape[0]), in_idx=None if dw else torch.arange(w.shape[1]))
        elif isinstance(mod, (nn.BatchNorm2d, nn.LayerNorm)):
            shrink_norm(mod, torch.arange(w.shape[0]))
        elif isinstance(mod, nn.Embedding):  # a trimmed vocabulary
            mod.weight = _param(mod.weight[: w.shape[0]])
            mod.num_embeddings = w.shape[0]
        elif isinstance(mod, nn.GroupNorm):  # whole groups were removed: channels per group stay
            per = mod.num_channels // mod.num_groups
            shrink_group_norm(mod, torch.arange(w.shape[0]), w.shape[0] // per)
        else:
            raise RuntimeError(f"saved weights give {name} the shape {tuple(w.shape)}, "
                               f"but a {type(mod).__name__} cannot be resized")
        resized.append(name)
    for att, _ in hf_attention(model):
        set_heads(att)
    return resized
