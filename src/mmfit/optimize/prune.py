"""Pruning: global magnitude (zeros in place) and structured (units really removed).

Structured pruning removes whole units, so the pruned model has smaller matrices and runs
faster, not only more zeros:
- feed-forward neurons of every transformer block (ours: `linear1`/`linear2`; Hugging Face
  BERT-style: `intermediate.dense`/`output.dense`),
- attention heads of Hugging Face BERT-style attention (`query/key/value` + `output.dense`);
  torch's own `nn.MultiheadAttention` (our scratch blocks) packs heads into one width-bound
  projection, so only its feed-forward part is pruned,
- expanded channels of inverted-residual conv blocks (EfficientNet MBConv: expand conv,
  depthwise conv, their BatchNorms, SE, project conv's inputs), and the inner channels of our
  conv stems (conv -> GroupNorm -> GELU -> conv; whole GroupNorm groups are removed).
The same share of units goes in every layer (uniform sparsity); which ones is decided by a
weight-based importance (no data needed): a neuron's in-norm times out-norm, a head's value
and output-projection norms, a channel's BatchNorm scale times its projection norm.

This module decides which weights or units go; the cutting (and resizing a freshly built model to
a pruned run's shapes when it is loaded) is models/surgery.py.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mmfit.models.surgery import (hf_attention, magnitude_targets, set_heads, shrink_conv, shrink_group_norm,
                                  shrink_linear, shrink_norm)


# ---------------------------------------------------------------------------- magnitude


@torch.no_grad()
def magnitude_prune(model, sparsity: float) -> dict:
    """Zero the `sparsity` share of the smallest-magnitude weights, ranked globally."""
    params = magnitude_targets(model)
    flat = torch.cat([p.detach().abs().flatten() for p in params.values()])
    k = int(sparsity * flat.numel())
    if k == 0:
        return {"pruned_weights": 0, "of": flat.numel()}
    threshold = torch.kthvalue(flat, k).values
    pruned = 0
    for p in params.values():
        mask = p.abs() <= threshold
        pruned += int(mask.sum())
        p.masked_fill_(mask, 0.0)
    return {"pruned_weights": pruned, "of": int(flat.numel()), "threshold": float(threshold)}


def count_nonzero(model) -> int:
    return sum(int((p != 0).sum()) for p in model.parameters())


def _keep(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Indices of the units to keep (highest scores, original order); at least one unit stays."""
    n = scores.numel()
    keep = max(1, n - int(math.floor(sparsity * n)))
    return torch.sort(torch.topk(scores, keep).indices).values


# ---------------------------------------------------------------------------- structured


def _ffn_pairs(module: nn.Module):
    """(up, down) Linear pairs of transformer feed-forward blocks, ours and BERT-style."""
    for mod in module.modules():
        if isinstance(mod, nn.TransformerEncoderLayer):
            yield mod.linear1, mod.linear2
        elif hasattr(mod, "intermediate") and hasattr(getattr(mod, "output", None), "dense") \
                and isinstance(getattr(mod.intermediate, "dense", None), nn.Linear):
            yield mod.intermediate.dense, mod.output.dense


def _conv_chains(module: nn.Module):
    """(conv, GroupNorm, next conv) inside Sequential stems (our scratch conv patch embedding)."""
    for mod in module.modules():
        if isinstance(mod, nn.Sequential):
            layers = list(mod)
            for i in range(len(layers) - 3):
                a, norm, _, b = layers[i:i + 4]
                if isinstance(a, nn.Conv2d) and isinstance(norm, nn.GroupNorm) and isinstance(b, nn.Conv2d) \
                        and a.groups == 1 and b.groups == 1:
                    yield a, norm, b


def _mbconv_blocks(module: nn.Module):
    for mod in module.modules():
        if all(hasattr(mod, a) for a in ("_expand_conv", "_depthwise_conv", "_bn0", "_bn1", "_project_conv")):
            yield mod


@torch.no_grad()
def structured_prune(model, sparsity: float) -> dict:
    """Remove `sparsity` of the FFN neurons, attention heads and expanded conv channels in every
    layer of every encoder (and of attention fusion). Returns what was removed."""
    done = {"ffn_neurons": [0, 0], "attention_heads": [0, 0], "conv_channels": [0, 0]}
    for part in (model.encoders, model.fusion):
        for up, down in _ffn_pairs(part):
            score = up.weight.norm(dim=1) * down.weight.norm(dim=0)
            idx = _keep(score, sparsity)
            done["ffn_neurons"][0] += up.out_features - len(idx)
            done["ffn_neurons"][1] += up.out_features
            shrink_linear(up, out_idx=idx)
            shrink_linear(down, in_idx=idx)
        for att, out in hf_attention(part):
            hs = att.attention_head_size
            heads = att.query.out_features // hs
            score = (att.value.weight.view(heads, hs, -1).flatten(1).norm(dim=1)
                     * out.weight.view(out.out_features, heads, hs).transpose(0, 1).flatten(1).norm(dim=1))
            keep = _keep(score, sparsity)
            idx = (keep.unsqueeze(1) * hs + torch.arange(hs)).flatten()
            done["attention_heads"][0] += heads - len(keep)
            done["attention_heads"][1] += heads
            for lin in (att.query, att.key, att.value):
                shrink_linear(lin, out_idx=idx)
            shrink_linear(out, in_idx=idx)
            set_heads(att)
        for blk in _mbconv_blocks(part):
            c = blk._depthwise_conv.out_channels
            score = blk._bn1.weight.abs() * blk._project_conv.weight.flatten(1).norm(dim=0)
            idx = _keep(score, sparsity)
            done["conv_channels"][0] += c - len(idx)
            done["conv_channels"][1] += c
            shrink_conv(blk._expand_conv, out_idx=idx)
            shrink_norm(blk._bn0, idx)
            shrink_conv(blk._depthwise_conv, out_idx=idx)
            shrink_norm(blk._bn1, idx)
            if getattr(blk, "has_se", False):
                shrink_conv(blk._se_reduce, in_idx=idx)
                shrink_conv(blk._se_expand, out_idx=idx)
            shrink_conv(blk._project_conv, in_idx=idx)
        for a, norm, b in _conv_chains(part):
            groups = norm.num_groups
            # whole GroupNorm groups go, so the groups that stay normalise exactly as before
            score = (norm.weight.abs() * b.weight.transpose(0, 1).flatten(1).norm(dim=1)).view(groups, -1).sum(1)
            keep_groups = _keep(score, sparsity)
            per = a.out_channels // groups
            idx = (keep_groups.unsqueeze(1) * per + torch.arange(per)).flatten()
            done["conv_channels"][0] += a.out_channels - len(idx)
            done["conv_channels"][1] += a.out_channels
            shrink_conv(a, out_idx=idx)
            shrink_group_norm(norm, idx, len(keep_groups))
            shrink_conv(b, in_idx=idx)
    return {k: {"removed": v[0], "of": v[1]} for k, v in done.items() if v[1]}
