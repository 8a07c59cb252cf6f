"""Flat arguments an encoder builder receives (modules never see the config object)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from mmfit.config import EncoderArch, ModelConfig
from mmfit.registry import ENCODERS, encoder_info


@dataclass
class EncoderSpec(EncoderArch):
    """The config's EncoderArch (how to build it) plus what the data and the run decide."""

    kind: str  # text | image | audio | video | tabular
    load_weights: bool = True  # False when rebuilding from a run directory
    vocab_size: int = 0
    max_length: int = 64
    n_mels: int = 64
    n_numeric: int = 0  # tabular: the width of `values`; its last sum(vector_sizes) are the vector columns'
    vector_sizes: list[int] = field(default_factory=list)
    cat_sizes: list[int] = field(default_factory=list)
    in_channels: int = 3
    frames: int = 1  # video: frames per clip

    def __post_init__(self):
        if self.dim is None:  # the encoder's own width, else the model's
            self.dim = ModelConfig.dim


def build_encoder(name: str, spec: EncoderSpec):
    """The registered encoder `name` for `spec.kind`; a video's is the image encoder inside a FrameEncoder."""
    info = encoder_info(name)
    if not info.encodes(spec.kind):
        raise ValueError(f"encoder '{name}' encodes {', '.join(info.kinds)}, not {spec.kind}")
    if spec.kind == "video":
        from mmfit.models.encoders.frames import FrameEncoder

        enc = FrameEncoder(ENCODERS.get(name)(replace(spec, kind="image")), spec.frames)
    else:
        enc = ENCODERS.get(name)(spec)
    enc.pretrained = info.pretrained
    return enc
