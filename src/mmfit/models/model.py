"""The multimodal model: encoders -> fusion -> task heads, plus per-modality auxiliary heads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from mmfit.config import Config, encoder_config, modality_kind
from mmfit.models.contract import EncoderOutput, token_grid
from mmfit.models.encoders import EncoderSpec, build_encoder
from mmfit.models.finetune import apply_strategy, backbone, is_frozen
from mmfit.models.heads import ConvexHead, CTCHead, GenerationHead, Head, MatchHead, NeighbourHead, TreeHead
from mmfit.models.mixup import mix_outputs
from mmfit.registry import FUSIONS, encoder_info


@dataclass
class ModelOutput:
    logits: dict[str, torch.Tensor]  # per task
    aux_logits: dict[str, torch.Tensor]  # per modality, for the primary task
    fused: torch.Tensor
    embeddings: dict[str, torch.Tensor]  # per modality, after projection / missing substitution


def keep_frozen_in_eval(encoders: nn.ModuleDict) -> None:
    """A frozen encoder stays in eval mode (a linear probe: no dropout, BatchNorm statistics fixed)."""
    for enc in encoders.values():
        if is_frozen(backbone(enc)):
            backbone(enc).eval()


def run_encoder(enc: nn.Module, inputs: dict, frozen_without_graph: bool = True) -> EncoderOutput:
    """An encoder's outputs; a frozen one's without an autograd graph (nothing to learn there: far
    less memory and time)."""
    if frozen_without_graph and is_frozen(enc):
        with torch.no_grad():
            return enc(inputs)
    return enc(inputs)


class MultimodalModel(nn.Module):
    def __init__(self, encoders: dict[str, nn.Module], fusion: nn.Module, heads: dict[str, nn.Module],
                 aux_heads: dict[str, nn.Module], primary_task: str):
        super().__init__()
        self.encoders = nn.ModuleDict(encoders)
        self.fusion = fusion
        self.heads = nn.ModuleDict(heads)
        self.aux_heads = nn.ModuleDict(aux_heads)
        self.primary_task = primary_task
        self.input_grad = False

    @property
    def modalities(self) -> list[str]:
        return list(self.encoders)

    def train(self, mode: bool = True):
        super().train(mode)
        keep_frozen_in_eval(self.encoders)
        return self

    def encode(self, m: str, inputs: dict[str, torch.Tensor]) -> EncoderOutput:
        if "pooled" in inputs:  # a frozen encoder's outputs, computed once (training/embeddings.py)
            pooled = inputs["pooled"]
            tokens = inputs.get("tokens", pooled.unsqueeze(1))
            mask = inputs.get("token_mask", torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device))
            return EncoderOutput(tokens.to(pooled.dtype), mask.bool(), pooled)
        # `input_grad` (set while an attack runs, models/adversarial.py): frozen encoders keep their graph
        return run_encoder(self.encoders[m], inputs, frozen_without_graph=self.training and not self.input_grad)

    def forward(self, inputs: dict[str, dict[str, torch.Tensor]], present: dict[str, torch.Tensor],
                mix: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
                targets: Optional[dict[str, torch.Tensor]] = None) -> ModelOutput:
        """`mix=(perm, lam)`: mixup of every modality's encoder output with row perm[i] at weight
        lam[i] (see models/mixup.py); the loss then mixes the targets alike. `targets`: a generation
        head's text (teacher forcing); without them it gives no logits (see `generate`)."""
        outputs = {m: self.encode(m, inputs[m]) for m in self.encoders}
        if mix is not None:
            outputs, present = mix_outputs(outputs, present, *mix)
        fused, emb = self.fusion(outputs, present)
        logits = {}
        for t, head in self.heads.items():
            if getattr(head, "reads_tokens", False):  # generation: the inputs' tokens and the text so far
                if targets is not None and t in targets:
                    logits[t] = head(fused, outputs, present, targets[t])
            elif getattr(head, "reads_modalities", False):  # matching: the two sides' own embeddings
                logits[t] = head(emb)
            elif getattr(head, "reads_encoders", False):  # nearest neighbours: the frozen encoders' outputs
                logits[t] = head(outputs, present)
            else:
                logits[t] = head(fused)
        aux = {m: head(outputs, present) if getattr(head, "reads_encoders", False) else head(emb[m])
               for m, head in self.aux_heads.items()}
        return ModelOutput(logits, aux, fused, emb)

    @torch.no_grad()
    def generate(self, inputs: dict, present: dict, task: str, start: int, end: int, beam: int = 1) -> torch.Tensor:
        """A generation task's text ids for each row (decoded from the inputs alone)."""
        outputs = {m: self.encode(m, inputs[m]) for m in self.encoders}
        fused, _ = self.fusion(outputs, present)
        return self.heads[task].generate(fused, outputs, present, start, end, beam)


def build_encoders(cfg: Config, pre, architectures: Optional[dict[str, Path]] = None,
                   init_states: Optional[dict[str, dict[str, torch.Tensor]]] = None) -> dict[str, nn.Module]:
    """One encoder per modality, its fine-tuning strategy applied. `init_states` (per modality, the
    encoder's weights from another run: `model.encoders.<m>.init`) are loaded before the strategy
    wraps the encoder, so the names are the plain encoder's in every run."""
    mc = cfg.model
    encoders = {}
    for m in pre.modalities:
        ec = encoder_config(cfg, m)
        spec = EncoderSpec(modality_kind(cfg, m), **vars(ec.arch()))
        spec.dim = ec.dim or mc.dim
        if spec.kind == "text":
            spec.vocab_size = pre.texts[m].vocab_size
            spec.max_length = cfg.data.text.max_length
        if spec.kind == "audio":
            spec.n_mels = cfg.data.audio.n_mels
        if spec.kind == "video":
            spec.frames = cfg.data.video.frames
        if spec.kind == "tabular":
            spec.n_numeric = len(pre.tabular.number_features)
            spec.vector_sizes = pre.tabular.vector_sizes
            spec.cat_sizes = [len(pre.tabular.vocab[c]) for c in pre.tabular.categorical]
        if architectures is not None:
            spec.load_weights = False
            if encoder_info(ec.name).hf_model:
                spec.path = str(architectures[m])
        enc = build_encoder(ec.name, spec)
        if init_states and m in init_states:
            try:
                enc.load_state_dict(init_states[m])
            except RuntimeError as e:
                raise ValueError(f"model.encoders.{m}.init: {ec.init} holds another encoder than this config builds "
                                 f"for '{m}' (same encoder name, width, layers and data settings needed): {e}") from None
        encoders[m] = apply_strategy(enc, ec.finetune, f"model.encoders.{m}")
    return encoders


def ctc_grid(cfg: Config, source: str, encoder: nn.Module) -> Optional[tuple[int, int]]:
    """(rows, columns) of the tokens an encoder lays over a log-mel input (the scratch conv stem:
    rows of frequency bands, columns of time), read off one pass over a silent clip; None for
    encoders whose tokens are already a time sequence (hf waveform models)."""
    if encoder_config(cfg, source).name != "scratch":
        return None
    a = cfg.data.audio
    shape = (a.n_mels, int(round(a.seconds * a.sample_rate)) // a.hop_length + 1)
    was = encoder.training
    encoder.eval()
    with torch.no_grad():
        n = encoder({"x": torch.zeros(1, *shape)}).tokens.shape[1]
    encoder.train(was)
    return token_grid(n, *shape)


def build_model(cfg: Config, pre, architectures: Optional[dict[str, Path]] = None,
                init_states: Optional[dict[str, dict[str, torch.Tensor]]] = None) -> MultimodalModel:
    """Build from config + fitted preprocessing. With `architectures` (a run's saved ones, per
    modality), the model is rebuilt without any pretrained weights: Hugging Face encoders from their
    saved architecture, and every weight then comes from the run's model.safetensors."""
    mc = cfg.model
    encoders = build_encoders(cfg, pre, architectures, init_states)
    dims = {m: e.dim for m, e in encoders.items()}
    fusion = FUSIONS.get(mc.fusion)(dims, mc.dim, mc.fusion_layers, mc.fusion_heads, mc.dropout)
    if mc.head in ("neighbours", "convex", "trees"):
        return _frozen_model(cfg, pre, encoders, fusion)
    heads = {}
    for t, p in pre.targets.items():
        if p.kind.paired:
            heads[t] = MatchHead(mc.dim, p.cfg.between)
        elif p.ctc:
            src = p.cfg.source
            grid = ctc_grid(cfg, src, encoders[src])
            heads[t] = CTCHead(mc.dim, p.n_outputs, src, encoders[src].dim, grid, mc.dropout)
        elif p.kind.writes:
            heads[t] = GenerationHead(mc.dim, p.n_outputs, {m: e.dim for m, e in encoders.items()}, p.cfg.max_length,
                                      p.cfg.decoder_layers, mc.fusion_heads, mc.dropout)
        else:
            heads[t] = Head(mc.dim, p.n_outputs, mc.dropout)
    primary = next(iter(pre.targets))
    aux = {}
    if cfg.loss.aux_weight > 0 and len(encoders) > 1 and pre.targets[primary].kind.per_row:
        aux = {m: Head(mc.dim, pre.targets[primary].n_outputs, mc.dropout) for m in encoders}
    return MultimodalModel(encoders, fusion, heads, aux, primary)


def _frozen_model(cfg: Config, pre, encoders: dict, fusion: nn.Module) -> MultimodalModel:
    """model.head: neighbours or convex: a head per task on every frozen encoder's outputs (k nearest
    training rows, or a linear model fitted in closed form), and (for the first task, with more than
    one of them) one on each alone as its auxiliary head. trees: a head per task on the table alone
    (its encoder frozen: table-stats), no auxiliary heads."""
    mc = cfg.model
    frozen = {m: e.dim for m, e in encoders.items() if is_frozen(e)}
    if mc.head == "trees":
        if "tabular" not in frozen:
            raise ValueError("model.head: trees reads the table's columns as they are: the data needs numeric or "
                             "categorical columns and model.encoders.tabular.name: table-stats")
        frozen = {"tabular": frozen["tabular"]}
        if any(p.kind.label_set for p in pre.targets.values()):
            raise ValueError("model.head: trees predicts classes and values, not labels (a multilabel task)")
    if not frozen:
        what = "compares rows by" if mc.head == "neighbours" else "is fitted on"
        raise ValueError(f"model.head: {mc.head} {what} their frozen encoders' outputs, and no encoder is frozen (set "
                         "model.encoders.<modality>.finetune.strategy: frozen on a pretrained one)")
    other = [t for t, p in pre.targets.items() if not p.kind.per_row]
    if other:
        raise ValueError(f"model.head: {mc.head} predicts classes, labels and values; data.targets.{other[0]} is "
                         f"a {pre.targets[other[0]].type} task")
    nb = mc.neighbours
    k, temp = nb.k or 10, nb.temperature or 0.1

    def head(dims: dict, p) -> nn.Module:
        if mc.head == "convex":
            return ConvexHead(dims, p.n_outputs)
        if mc.head == "trees":
            return TreeHead(dims, p.n_outputs)
        return NeighbourHead(dims, p.type, p.n_outputs, k, temp)

    heads = {t: head(frozen, p) for t, p in pre.targets.items()}
    primary = next(iter(pre.targets))
    aux = {}
    if cfg.loss.aux_weight > 0 and len(frozen) > 1:
        aux = {m: head({m: d}, pre.targets[primary]) for m, d in frozen.items()}
    return MultimodalModel(encoders, fusion, heads, aux, primary)


def trim_vocabularies(model: MultimodalModel, cfg: Config, pre, token_ids: dict[str, torch.Tensor]) -> dict:
    """Encoders with `trim_vocab` keep only the embedding rows of tokens in `token_ids` (the
    training split's) plus the special tokens; unseen tokens then read as unknown.
    -> {modality: (rows before, rows after)}."""
    done = {}
    for m, enc in model.encoders.items():
        if encoder_config(cfg, m).trim_vocab and hasattr(enc, "id_map") and m in token_ids:
            tok = pre.texts[m].tokenizer
            unk = tok.unk_token_id if tok.unk_token_id is not None else tok.pad_token_id
            done[m] = enc.trim_vocab(token_ids[m], [int(unk), *map(int, tok.all_special_ids)])
    return done
