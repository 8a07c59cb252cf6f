"""int8 weights inside a PyTorch model, and loading plain / half / int8 tensors into a freshly built one.

On disk an int8 tensor `<module>.weight` sits next to its `<module>.weight_scale`; `load_state`
swaps in the int8 modules by those names (torch.ao dynamic int8 Linear, `Int8Embedding`, conv weights
dequantized once), so a run directory needs no pickles. optimize/quantize.py makes them.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.nn import functional as F

SCALE = ".weight_scale"


def dq_linear_type():
    from torch.ao.nn.quantized.dynamic import Linear

    return Linear


class Int8Embedding(nn.Module):
    """An embedding table stored int8 per row; only the looked-up rows are dequantized."""

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor):
        super().__init__()
        self.num_embeddings, self.embedding_dim = weight.shape
        self.register_buffer("weight", weight)
        self.register_buffer("weight_scale", scale)

    @classmethod
    def from_float(cls, emb: nn.Embedding) -> "Int8Embedding":
        q, s = quantize_rows(emb.weight.detach())
        return cls(q, s)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight).float() * F.embedding(ids, self.weight_scale.unsqueeze(1))


def quantize_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per row (dim 0): w ~= q * scale[:, None, ...]."""
    flat = w.float().flatten(1)
    scale = flat.abs().amax(dim=1).clamp(min=1e-12) / 127.0
    q = torch.round(flat / scale.unsqueeze(1)).clamp(-127, 127).to(torch.int8)
    return q.view_as(w), scale


def dequantize_rows(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.float() * scale.view(-1, *([1] * (q.ndim - 1)))


def set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def quantize_linears(model: nn.Module, names: list[str]) -> None:
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's quantized-tensor deprecation notices
        quantize_dynamic(model, {n: per_channel_dynamic_qconfig for n in names}, inplace=True)


def linear_names(model: nn.Module) -> list[str]:
    # Linear subclasses (nn.MultiheadAttention's out_proj) are driven by their owner's fused
    # kernel, not by their own forward, so only plain Linear layers are swapped
    return [n for n, m in model.named_modules() if type(m) is nn.Linear]


@torch.no_grad()
def load_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load plain, half-precision or int8 tensors saved by this module into a freshly built model."""
    int8 = [k[: -len(SCALE)] for k in state if k.endswith(SCALE)]
    linears = []
    state = dict(state)
    for name in int8:
        mod = model.get_submodule(name)
        q, s = state.pop(f"{name}.weight"), state.pop(f"{name}{SCALE}")
        if type(mod) is nn.Linear:
            linears.append((name, q, s, state.pop(f"{name}.bias", None)))
        elif isinstance(mod, nn.Embedding):
            set_module(model, name, Int8Embedding(q, s))
        elif isinstance(mod, nn.Conv2d):
            mod.weight.copy_(dequantize_rows(q, s))
        else:
            raise RuntimeError(f"int8 weights saved for {name}, a {type(mod).__name__}: cannot load them")
    own = model.state_dict()
    state = {k: v.to(own[k].dtype) if k in own and v.is_floating_point() else v for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    loaded = {f"{n}{x}" for n in int8 for x in (".weight", SCALE)} | {f"{n}.bias" for n, *_ in linears}
    missing = [k for k in missing if k not in loaded]
    if missing or unexpected:
        raise RuntimeError(f"weights do not match the model (missing {missing[:5]}, unexpected {unexpected[:5]})")
    if linears:
        quantize_linears(model, [n for n, *_ in linears])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for name, q, s, b in linears:
                qw = torch._make_per_channel_quantized_tensor(q, s.double(), torch.zeros(len(s), dtype=torch.long), 0)
                model.get_submodule(name).set_weight_bias(qw, b)
