"""Task heads on the fused vector, and auxiliary heads on each modality's own embedding."""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from mmfit.tasks import task_kind


class Head(nn.Module):
    def __init__(self, dim: int, n_out: int, dropout: float = 0.1):
        super().__init__()
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, n_out))

    def forward(self, x):
        return self.net(x)


@torch.no_grad()
def standardisation(pooled: dict[str, torch.Tensor], present: dict[str, torch.Tensor], modalities: list[str]) -> tuple:
    """Each modality's pooled outputs' mean and spread over the rows that have it, side by side
    -> (mean, scale) [sum of widths] (a modality fewer than two rows have: 0 and 1)."""
    means, scales = [], []
    for m in modalities:
        x = pooled[m].float()[present[m].bool()]
        if len(x) < 2:
            x = torch.zeros(2, pooled[m].shape[-1])
        means.append(x.mean(0))
        scales.append(x.std(0).clamp(min=1e-6))
    return torch.cat(means), torch.cat(scales)


class NeighbourHead(nn.Module):
    """k nearest neighbours among the training rows, on frozen encoders' pooled outputs (the kNN of
    AutoGluon's model portfolio; the kNN evaluation of frozen features, DINO, SimpleShot). A row is
    described by each of `modalities`' pooled output, standardised with the training rows' mean and
    spread and scaled to unit length, the parts side by side over sqrt(M) (so the dot product of two
    rows is the mean of their per-modality cosine similarities; a missing modality adds nothing).
    Its prediction is the average of its k most similar training rows' targets, weighted by
    softmax(similarity / temperature); `values` holds those targets (one-hot classes, 0/1 labels,
    standardised values). Output: log-probabilities (classification), logits of the label
    probabilities (multilabel), or the value (regression). Nothing is learned by gradient: `fill`
    stores the rows (training/neighbours.py), and they are buffers, saved with the weights."""

    reads_encoders = True
    SMOOTH = 0.01  # of the probability spread evenly over the classes: no class is ever impossible

    def __init__(self, dims: dict[str, int], kind: str, n_out: int, k: int = 10, temperature: float = 0.1):
        super().__init__()
        self.modalities, self.widths = list(dims), [dims[m] for m in dims]
        self.kind, self.k, self.temperature = kind, k, temperature
        width = sum(self.widths)
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("scale", torch.ones(width))
        self.register_buffer("keys", torch.zeros(0, width))
        self.register_buffer("values", torch.zeros(0, n_out))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("keys", "values"):  # as many rows as the run kept
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name], dtype=getattr(self, name).dtype))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def describe(self, outputs: dict, present: dict) -> torch.Tensor:
        """Rows' descriptions [B, width]: per modality standardised, unit length, zero where missing."""
        parts, at = [], 0
        for m, w in zip(self.modalities, self.widths):
            x = (outputs[m].pooled.float() - self.mean[at:at + w]) / self.scale[at:at + w]
            x = nn.functional.normalize(x, dim=-1) * present[m].float().unsqueeze(-1)
            parts.append(x)
            at += w
        return torch.cat(parts, -1) / math.sqrt(len(parts))

    @torch.no_grad()
    def fill(self, pooled: dict[str, torch.Tensor], present: dict[str, torch.Tensor], values: torch.Tensor) -> None:
        """Store the training rows: `pooled` and `present` per modality ([N, dim], [N]), their targets."""
        self.mean, self.scale = standardisation(pooled, present, self.modalities)
        self.keys = self.describe({m: Pooled(pooled[m]) for m in self.modalities}, present)
        self.values = values.float().reshape(len(values), -1)

    def forward(self, outputs: dict, present: dict) -> torch.Tensor:
        q = self.describe(outputs, present)
        sim = q @ self.keys.T  # [B, N]
        k = min(self.k, self.keys.shape[0])
        top, idx = sim.topk(k, dim=-1)
        w = torch.softmax(top / self.temperature, -1)  # [B, k]
        avg = (w.unsqueeze(-1) * self.values[idx]).sum(1)  # [B, n_out]
        # a row without any of the modalities read: the training rows' average
        seen = (q.abs().sum(-1, keepdim=True) > 0).float()
        avg = seen * avg + (1 - seen) * self.values.mean(0, keepdim=True)
        kind = task_kind(self.kind)
        if kind.exclusive:
            return torch.log(avg * (1 - self.SMOOTH) + self.SMOOTH / avg.shape[-1])
        if kind.label_set:
            p = avg.clamp(0.005, 0.995)
            return torch.log(p) - torch.log1p(-p)
        return avg


class ConvexHead(nn.Module):
    """A linear model on frozen encoders' pooled outputs, fitted in closed form rather than by
    gradient (training/convex.py: scikit-learn's logistic or ridge regression, its regularisation
    chosen by cross-validation): the linear probe every practitioner runs first, as a member of
    the ensemble. Each modality's pooled output is standardised with the fitted rows' mean and
    spread, and set to 0 (its mean) where the modality is missing; then one linear layer. Output:
    class logits, label logits, or the (standardised) value. Its weights are buffers, so the head
    exports to ONNX as a linear layer and is saved with the run like any other weight."""

    reads_encoders = True

    def __init__(self, dims: dict[str, int], n_out: int):
        super().__init__()
        self.modalities, self.widths = list(dims), [dims[m] for m in dims]
        width = sum(self.widths)
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("scale", torch.ones(width))
        self.register_buffer("weight", torch.zeros(n_out, width))
        self.register_buffer("bias", torch.zeros(n_out))

    def features(self, outputs: dict, present: dict) -> torch.Tensor:
        """Rows' standardised features [B, width] (0 where a modality is missing)."""
        parts, at = [], 0
        for m, w in zip(self.modalities, self.widths):
            x = (outputs[m].pooled.float() - self.mean[at:at + w]) / self.scale[at:at + w]
            parts.append(x * present[m].float().unsqueeze(-1))
            at += w
        return torch.cat(parts, -1)

    def forward(self, outputs: dict, present: dict) -> torch.Tensor:
        return self.features(outputs, present) @ self.weight.T + self.bias


class TreeHead(nn.Module):
    """Gradient-boosted trees on a frozen encoder's pooled output (the table as it is: table-stats),
    as tensors: every tree's nodes side by side (feature, threshold, children, leaf value), walked
    for all trees at once, one level a step, so the head is plain gathers and comparisons that run
    on any device and export to ONNX. Fitted by training/trees.py (scikit-learn's
    HistGradientBoosting, bagged over cross-fitting folds: each fold's trees at 1 / folds of their
    value). Output: class logits (a binary task: [0, the trees' logit]) or the (standardised) value."""

    reads_encoders = True

    def __init__(self, dims: dict[str, int], n_out: int):
        super().__init__()
        self.modalities, self.widths = list(dims), [dims[m] for m in dims]
        self.n_out = n_out
        for name, dtype in (("feature", torch.long), ("left", torch.long), ("right", torch.long),
                            ("leaf", torch.bool), ("roots", torch.long), ("output", torch.long)):
            self.register_buffer(name, torch.zeros(0, dtype=dtype))
        self.register_buffer("threshold", torch.zeros(0))
        self.register_buffer("value", torch.zeros(0))
        self.register_buffer("baseline", torch.zeros(n_out))
        self.depth = 0  # levels to walk: the deepest tree's (read from the nodes once loaded)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("feature", "left", "right", "leaf", "roots", "output", "threshold", "value"):
            if prefix + name in state_dict:  # as many nodes as the run's trees hold
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.depth = self._walk_depth()

    def _walk_depth(self) -> int:
        """The most levels from a root to a leaf (each inner node's children one below it)."""
        depth = torch.zeros(len(self.feature), dtype=torch.long)
        order = torch.arange(len(self.feature))
        for _ in range(64):  # children come after their parents: a few passes settle every depth
            inner = order[~self.leaf]
            new = depth.clone()
            new[self.left[inner]] = depth[inner] + 1
            new[self.right[inner]] = depth[inner] + 1
            if torch.equal(new, depth):
                break
            depth = new
        return int(depth.max()) if len(depth) else 0

    def set_trees(self, feature, threshold, left, right, leaf, value, roots, output, baseline) -> None:
        as_long = (lambda a: torch.as_tensor(a, dtype=torch.long))
        self.feature, self.left, self.right, self.roots, self.output = map(as_long, (feature, left, right, roots, output))
        self.leaf = torch.as_tensor(leaf, dtype=torch.bool)
        self.threshold = torch.as_tensor(threshold, dtype=torch.float32)
        self.value = torch.as_tensor(value, dtype=torch.float32)
        self.baseline = torch.as_tensor(baseline, dtype=torch.float32)
        self.depth = self._walk_depth()

    def features(self, outputs: dict, present: dict) -> torch.Tensor:
        return torch.cat([outputs[m].pooled.float() * present[m].float().unsqueeze(-1) for m in self.modalities], -1)

    def forward(self, outputs: dict, present: dict) -> torch.Tensor:
        x = self.features(outputs, present)
        node = self.roots.unsqueeze(0).expand(x.shape[0], -1)  # [B, trees]
        for _ in range(self.depth):
            go_left = x.gather(1, self.feature[node]) <= self.threshold[node]
            node = torch.where(self.leaf[node], node, torch.where(go_left, self.left[node], self.right[node]))
        leaves = self.value[node]  # [B, trees]
        per_output = torch.nn.functional.one_hot(self.output, self.n_out).to(leaves.dtype)  # [trees, n_out]
        return self.baseline + leaves @ per_output


class Pooled:
    """Pooled outputs standing in for an EncoderOutput (the heads fitted on stored rows: NeighbourHead.fill,
    training/crossfit.py)."""

    def __init__(self, pooled: torch.Tensor):
        self.pooled = pooled


class MatchHead(nn.Module):
    """A matching task's two projections into one space (CLIP): each side's embedding -> a unit
    vector times sqrt(scale), so that the dot product of two rows' outputs is scale x their cosine
    similarity (scale = 1 / temperature, learned). Output [B, 2, dim]: side a, side b."""

    reads_modalities = True

    def __init__(self, dim: int, between: list[str], temperature: float = 0.07):
        super().__init__()
        self.between = list(between)
        # batch normalisation in the projection (SimCLR, MoCo v3): from-scratch encoders give every row
        # nearly the same vector at first, so all similarities are alike and InfoNCE barely moves them;
        # standardising each feature over the batch leaves what tells the rows apart
        self.a = nn.Sequential(nn.Linear(dim, dim), nn.BatchNorm1d(dim))
        self.b = nn.Sequential(nn.Linear(dim, dim), nn.BatchNorm1d(dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / temperature)))

    def side(self, which: int, emb: torch.Tensor) -> torch.Tensor:
        """One side's unit vectors (`which` 0: between[0], 1: between[1])."""
        linear, norm = self.a if which == 0 else self.b
        x = linear(emb)
        if self.training and len(x) < 2:  # one row has no batch statistics: use the running ones
            x = nn.functional.batch_norm(x, norm.running_mean, norm.running_var, norm.weight, norm.bias, False)
        else:
            x = norm(x)
        return nn.functional.normalize(x, dim=-1)

    def forward(self, emb: dict[str, torch.Tensor]) -> torch.Tensor:
        root = self.logit_scale.clamp(max=math.log(100.0)).mul(0.5).exp()
        return torch.stack([self.side(0, emb[self.between[0]]), self.side(1, emb[self.between[1]])], 1) * root


class GenerationHead(nn.Module):
    """A small autoregressive transformer decoder that writes a text from the inputs: it cross-attends
    to every present modality's tokens (each projected to `dim`, plus a learned modality embedding)
    and to the fused vector (always present, so a row with one modality still has something to
    read). Teacher forcing when training (`forward` with the target ids -> next-token logits);
    `generate` decodes greedily or with a beam."""

    reads_tokens = True

    def __init__(self, dim: int, vocab: int, enc_dims: dict[str, int], max_length: int, layers: int = 2,
                 heads: int = 4, dropout: float = 0.1):
        super().__init__()
        from mmfit.models.contract import gelu, sincos_1d

        self.max_length = max_length
        self.embed = nn.Embedding(vocab, dim, padding_idx=0)
        self.register_buffer("pos", sincos_1d(max_length, dim), persistent=False)
        self.proj = nn.ModuleDict({m: nn.Linear(d, dim) for m, d in enc_dims.items()})
        self.modality = nn.ParameterDict({m: nn.Parameter(torch.zeros(dim)) for m in enc_dims})
        layer = nn.TransformerDecoderLayer(dim, heads, dim * 4, dropout, activation=gelu, batch_first=True,
                                           norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, layers)
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, vocab, bias=False)
        self.out.weight = self.embed.weight  # tied input and output embeddings

    def memory(self, fused: torch.Tensor, outputs: dict, present: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (memory [B, 1 + sum T_m, dim], key padding mask: True where there is nothing to read)."""
        parts, pad = [fused.unsqueeze(1)], [torch.zeros(len(fused), 1, dtype=torch.bool, device=fused.device)]
        for m, o in outputs.items():
            parts.append(self.proj[m](o.tokens.to(fused.dtype)) + self.modality[m])
            pad.append(~(o.mask.bool() & present[m].unsqueeze(1)))
        return torch.cat(parts, 1), torch.cat(pad, 1)

    def logits(self, ids: torch.Tensor, memory: torch.Tensor, memory_pad: torch.Tensor) -> torch.Tensor:
        n = ids.shape[1]
        causal = torch.triu(torch.ones(n, n, dtype=torch.bool, device=ids.device), 1)  # True: not visible
        x = self.embed(ids) + self.pos[:n].unsqueeze(0)
        x = self.decoder(x, memory, tgt_mask=causal, tgt_key_padding_mask=ids == 0,
                         memory_key_padding_mask=memory_pad)
        return self.out(self.norm(x))

    def forward(self, fused, outputs, present, target: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: target ids [B, L] -> logits [B, L - 1, vocab] for target[:, 1:]."""
        mem, pad = self.memory(fused, outputs, present)
        ids = target[:, :-1].clone()
        ids[:, 0] = ids[:, 0].clamp(min=1)  # a row without a target still has a start to attend from
        return self.logits(ids, mem, pad)

    @torch.no_grad()
    def generate(self, fused, outputs, present, start: int, end: int, beam: int = 1,
                 max_length: Optional[int] = None) -> torch.Tensor:
        """-> ids [B, <= max_length - 1] after the start token: greedy (beam 1), or beam search."""
        mem, pad = self.memory(fused, outputs, present)
        n = (max_length or self.max_length) - 1
        return self.greedy(mem, pad, start, end, n) if beam == 1 else self.beam_search(mem, pad, start, end, n, beam)

    def greedy(self, mem, pad, start: int, end: int, n: int) -> torch.Tensor:
        ids = torch.full((len(mem), 1), start, dtype=torch.long, device=mem.device)
        done = torch.zeros(len(mem), dtype=torch.bool, device=mem.device)
        for _ in range(n):
            token = self.logits(ids, mem, pad)[:, -1].argmax(-1).masked_fill(done, 0)
            ids = torch.cat([ids, token.unsqueeze(1)], 1)
            done = done | (token == end)
            if bool(done.all()):
                break
        return ids[:, 1:]

    def beam_search(self, mem, pad, start: int, end: int, n: int, beam: int) -> torch.Tensor:
        """Beams ranked by their mean log-probability per token once finished (or at the length limit)."""
        b = len(mem)
        mem, pad = mem.repeat_interleave(beam, 0), pad.repeat_interleave(beam, 0)
        ids = torch.full((b * beam, 1), start, dtype=torch.long, device=mem.device)
        score = torch.zeros(b, beam, device=mem.device)
        score[:, 1:] = float("-inf")  # every beam starts as the same sequence: keep one
        done = torch.zeros(b * beam, dtype=torch.bool, device=mem.device)
        length = torch.zeros(b * beam, device=mem.device)
        for _ in range(n):
            logp = torch.log_softmax(self.logits(ids, mem, pad)[:, -1].float(), -1)  # [B*W, V]
            v = logp.shape[-1]
            logp[done] = float("-inf")
            logp[done, 0] = 0.0  # a finished beam only pads, at no cost
            total = (score.view(-1, 1) + logp).view(b, beam * v)
            score, flat = total.topk(beam, dim=1)
            origin = (flat // v) + torch.arange(b, device=flat.device).unsqueeze(1) * beam
            token = (flat % v).view(-1)
            origin = origin.view(-1)
            ids = torch.cat([ids[origin], token.unsqueeze(1)], 1)
            done, length = done[origin], length[origin]
            length = length + (~done).float()
            done = done | (token == end)
            if bool(done.all()):
                break
        best = (score / length.view(b, beam).clamp(min=1)).argmax(1)
        return ids.view(b, beam, -1)[torch.arange(b), best, 1:]


class CTCHead(nn.Module):
    """Transcribes one audio column into characters, frame by frame (CTC: Graves et al. 2006; the head
    of wav2vec 2.0 and DeepSpeech). The source encoder's tokens become time steps (a spectrogram
    grid's columns, each its rows' tokens side by side: a row is a band of frequencies, and which
    band holds the energy is what tells sounds apart; a sequence encoder's tokens as they are). Each
    step is read as UPSAMPLE frames (a patch-8 stem's columns are 8 hops apart, ~80 ms at a 10 ms
    hop, and CTC needs a frame per character plus blanks between repeats), and a linear layer scores
    the characters and the blank (id 0). The encoder's self-attention is the context: a recurrent
    layer on top (DeepSpeech) was tried and, on a few hundred clips, kept the head at the all-blank
    plateau for many more steps. Output: log-probabilities [B, frames, vocab]; decoding keeps each
    frame's best id, merges repeats and drops blanks (best path)."""

    reads_tokens = True
    UPSAMPLE = 2

    def __init__(self, dim: int, vocab: int, source: str, enc_dim: int, grid: Optional[tuple[int, int]],
                 dropout: float = 0.1):
        super().__init__()
        self.source, self.grid = source, grid  # grid: (rows, columns) of the source's tokens, or None
        width = enc_dim * (grid[0] if grid else 1)
        self.inp = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, dim * self.UPSAMPLE), nn.GELU())
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(dim, vocab)

    def frames(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, N, D] -> [B, T, rows x D]: the time steps of the source's tokens."""
        if self.grid is None:
            return tokens
        b, n, d = tokens.shape
        if n != self.grid[0] * self.grid[1]:
            raise ValueError(f"the CTC head reads {self.source}'s tokens as a {self.grid[0]} x {self.grid[1]} grid "
                             f"(set when the model was built), got {n} tokens: clips of another length?")
        return tokens.reshape(b, self.grid[0], self.grid[1], d).permute(0, 2, 1, 3).reshape(b, self.grid[1], -1)

    def forward(self, fused, outputs, present, target: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = self.inp(self.frames(outputs[self.source].tokens.to(fused.dtype)))
        b, t, _ = x.shape
        x = x.reshape(b, t * self.UPSAMPLE, -1)
        return torch.log_softmax(self.out(self.drop(x)).float(), -1)

    @torch.no_grad()
    def generate(self, fused, outputs, present, start=None, end=None, beam: int = 1,
                 max_length: Optional[int] = None) -> torch.Tensor:
        """-> ids [B, <= frames]: best path, repeats merged, blanks dropped, padded with 0 (a row
        without the audio: empty)."""
        best = self.forward(fused, outputs, present).argmax(-1)  # [B, T]
        best[~present[self.source].bool()] = 0  # no audio, nothing to transcribe
        keep = best != 0
        keep[:, 1:] &= best[:, 1:] != best[:, :-1]
        out = torch.zeros_like(best)
        for i in range(len(best)):
            ids = best[i][keep[i]]
            out[i, : len(ids)] = ids
        n = int(keep.sum(1).max()) if len(best) else 0
        return out[:, : max(1, min(n, max_length or n))]


def ctc_loss(log_probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CTC over rows of character ids (0: blank and padding). A text that cannot be aligned to the
    frames (longer than they allow: a character each, a blank between repeats) is an error, never a
    silently zeroed loss."""
    frames = log_probs.shape[1]
    lengths = (target != 0).sum(1)
    repeats = ((target[:, 1:] == target[:, :-1]) & (target[:, 1:] != 0)).sum(1)
    need = lengths + repeats
    if bool((need > frames).any()):
        raise ValueError(f"a text of {int(lengths[need.argmax()])} characters needs {int(need.max())} frames to be "
                         f"transcribed by CTC; the audio encoder gives {frames}: lower data.audio.hop_length or the "
                         "encoder's patch, or raise data.audio.seconds if the clips are cut")
    b = len(target)
    return torch.nn.functional.ctc_loss(log_probs.transpose(0, 1), target, torch.full((b,), frames, dtype=torch.long),
                                        lengths, blank=0, reduction="mean", zero_infinity=False)
