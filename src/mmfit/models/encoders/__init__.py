"""Encoders, registered by name; each meets the EncoderOutput contract.

A builder takes the modality kind and flat keyword arguments (see `EncoderSpec`).
"""

from mmfit.models.encoders import hf, packaged, scratch, stats  # noqa: F401  (registration)
from mmfit.models.encoders.spec import EncoderSpec, build_encoder  # noqa: F401
