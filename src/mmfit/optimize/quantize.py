"""Quantization of a trained model, stored as plain safetensors (or ONNX) in a new run directory.

- `dynamic-int8` (PyTorch): every Linear runs int8 x int8 with activations quantized per batch
  at run time (`torch.ao` dynamic quantized Linear, per-output-channel symmetric weights, fbgemm
  / x86 kernels). torchao 0.18's `Int8DynamicActivationInt8WeightConfig` was measured instead:
  in eager mode on this 2-core AVX2 CPU it ran MiniLM at batch 32 about 20x slower than fp32
  (its fast paths need torch.compile or a GPU), so torch.ao serves here.
  Embedding tables are int8 per row and dequantize only the rows looked up. Conv weights are
  stored int8 per output channel and dequantized once at load (weight-only: smaller on disk,
  fp32 convolutions).
- `fp16` / `bf16`: half-precision weights (half the file). bf16 runs under bf16 autocast; fp16
  is a storage format (weights widen to fp32 at load: CPUs have no fast fp16 kernels, and fp16
  autocast on GPUs is not wired in yet).
- `onnx-int8` (ONNX Runtime): the exported graph with MatMul/Gemm dynamically quantized to int8,
  embedding tables int8, and conv weights int8 (weight-only, DequantizeLinear before each Conv,
  folded into fp32 weights when the session loads; ORT's activation-quantized ConvInteger was 9x
  slower than fp32 convolutions here).

On disk, an int8 tensor `<module>.weight` sits next to its `<module>.weight_scale`; loading
(models/quantized.py `load_state`) swaps in the int8 modules by those names, so a run directory
needs no pickles.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mmfit.models.quantized import (SCALE, Int8Embedding, dequantize_rows, dq_linear_type, linear_names,
                                    quantize_linears, quantize_rows, set_module)

HALF = {"fp16": torch.float16, "bf16": torch.bfloat16}


@torch.no_grad()
def quantize_dynamic_int8(model: nn.Module) -> dict:
    """In place: Linear -> dynamic int8, Embedding -> Int8Embedding, Conv2d weights rounded to int8."""
    counts = {"linear": 0, "embedding": 0, "conv_weight_only": 0}
    for name, mod in list(model.named_modules()):
        if isinstance(mod, nn.Embedding):
            set_module(model, name, Int8Embedding.from_float(mod))
            counts["embedding"] += 1
        elif isinstance(mod, nn.Conv2d):
            mod.weight.copy_(dequantize_rows(*quantize_rows(mod.weight)))
            counts["conv_weight_only"] += 1
    names = linear_names(model)
    quantize_linears(model, names)
    counts["linear"] = len(names)
    return counts


def count_weights(model: nn.Module) -> tuple[int, int]:
    """(weights, non-zero weights), counting int8 layers' weights too (they are not parameters)."""
    dq = dq_linear_type()
    tensors = list(model.parameters())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for mod in model.modules():
            if isinstance(mod, dq):
                tensors.append(mod.weight().int_repr())
                if mod.bias() is not None:
                    tensors.append(mod.bias())
            elif isinstance(mod, Int8Embedding):
                tensors.append(mod.weight)
    return sum(t.numel() for t in tensors), sum(int((t != 0).sum()) for t in tensors)


def int8_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The quantized model as plain tensors (int8 weights + per-channel scales)."""
    dq = dq_linear_type()
    state, skip = {}, []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, mod in model.named_modules():
            if isinstance(mod, dq):
                w = mod.weight()
                state[f"{name}.weight"] = w.int_repr()
                state[f"{name}{SCALE}"] = w.q_per_channel_scales().float()
                if mod.bias() is not None:
                    state[f"{name}.bias"] = mod.bias().detach()
                skip.append(f"{name}.")
            elif isinstance(mod, nn.Conv2d):
                q, s = quantize_rows(mod.weight.detach())
                state[f"{name}.weight"], state[f"{name}{SCALE}"] = q, s
        for k, v in model.state_dict().items():
            if torch.is_tensor(v) and not any(k.startswith(p) for p in skip) and k not in state:
                state[k] = v.detach().clone()
    return state


def half_state(model: nn.Module, precision: str) -> dict[str, torch.Tensor]:
    dt = HALF[precision]
    return {k: v.detach().to(dt) if v.is_floating_point() else v.detach().clone()
            for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------------- ONNX Runtime


def onnx_int8(src: Path, dst: Path) -> dict:
    """fp32 ONNX graph -> int8: dynamic MatMul/Gemm, int8 embedding tables, weight-only int8 convs."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = dst.with_name(f".{dst.name}.tmp")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # onnxruntime logs a generic "consider pre-processing" advice on every call
    try:
        quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul", "Gemm", "Gather"])
    finally:
        root.setLevel(level)
    g = onnx.load(str(tmp))
    n_conv = _conv_weights_int8(g)
    onnx.save(g, str(tmp))
    tmp.replace(dst)
    return {"matmul_gemm_gather": "dynamic int8 (onnxruntime)", "conv_weight_only": n_conv}


def _conv_weights_int8(g) -> int:
    """Replace each fp32 Conv weight initializer by int8 + per-channel scale + DequantizeLinear."""
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in g.graph.initializer}
    users: dict[str, int] = {}
    for node in g.graph.node:
        for x in node.input:
            users[x] = users.get(x, 0) + 1
    new_nodes, n = [], 0
    for node in g.graph.node:
        if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in inits and users[node.input[1]] == 1:
            name = node.input[1]
            w = numpy_helper.to_array(inits[name]).astype(np.float32)
            q, s = quantize_rows(torch.from_numpy(w))
            g.graph.initializer.remove(inits[name])
            g.graph.initializer.extend([numpy_helper.from_array(q.numpy(), f"{name}_int8"),
                                        numpy_helper.from_array(s.numpy().astype(np.float32), f"{name}_scale"),
                                        numpy_helper.from_array(np.zeros(len(s), np.int8), f"{name}_zero")])
            new_nodes.append(helper.make_node("DequantizeLinear", [f"{name}_int8", f"{name}_scale", f"{name}_zero"],
                                              [name], axis=0, name=f"{name}_dequantize"))
            n += 1
        new_nodes.append(node)
    del g.graph.node[:]
    g.graph.node.extend(new_nodes)
    return n
