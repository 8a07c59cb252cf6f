"""Which device a model runs on: `auto` (a CUDA GPU where there is one, else the CPU), `cpu`,
`cuda` or `cuda:N`. One reading for training, every command that predicts, and ONNX Runtime."""

from __future__ import annotations

import re

DEVICE_HELP = "auto (a CUDA GPU where there is one, else the CPU), cpu, cuda or cuda:N"


def resolve_device(name: str = "auto") -> str:
    """`name` -> a torch device string that exists here; a clear error for a GPU that does not."""
    import torch

    name = (name or "auto").strip().lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return "cpu"
    m = re.fullmatch(r"cuda(?::(\d+))?", name)
    if not m:
        raise ValueError(f"device {name!r}: give {DEVICE_HELP}")
    if not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: no CUDA GPU is visible to PyTorch here (torch {torch.__version__}, "
                         f"built {'with' if torch.version.cuda else 'without'} CUDA); use --device cpu or auto")
    if m.group(1) is not None and int(m.group(1)) >= torch.cuda.device_count():
        raise ValueError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                         f"numbered from 0")
    return name


def onnx_providers(device: str) -> list:
    """ONNX Runtime execution providers for a resolved device: CUDA first where onnxruntime-gpu is
    installed and the device is a GPU (with the device id), the CPU always as the fallback."""
    import onnxruntime as ort

    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        index = int(device.split(":")[1]) if ":" in device else 0
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]
