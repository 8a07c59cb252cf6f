"""Flat arguments an encoder builder receives (modules never see the config object)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from mmfit.registry import ENCODERS


@dataclass
class EncoderSpec:
    kind: str  # text | image | audio | tabular
    dim: int = 128
    layers: int = 2
    heads: int = 4
    patch: int = 8
    dropout: float = 0.1
    path: Optional[str] = None  # hf: a local model directory (architecture + weights)
    load_weights: bool = True  # False when rebuilding from a run directory
    vocab_size: int = 0
    max_length: int = 64
    n_numeric: int = 0
    cat_sizes: list[int] = field(default_factory=list)
    in_channels: int = 3
    keep_layers: Optional[int] = None  # hf: only the first N transformer layers
    embed_rank: Optional[int] = None  # hf text: the embedding table factorised to this rank
    trim_vocab: bool = False  # hf text: an id map in front of a (later) trimmed embedding table


def build_encoder(name: str, spec: EncoderSpec):
    enc = ENCODERS.get(name)(spec)
    if not hasattr(enc, "pretrained"):
        enc.pretrained = False
    return enc
