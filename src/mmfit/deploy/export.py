"""`mmfit export RUN --format onnx`: the whole fused model as one ONNX graph with a fixed signature.

Inputs: every modality's tensors as `<modality>.<name>` (e.g. `text.input_ids`, `image.x`) plus a
boolean `<modality>.present` per row; the batch axis is dynamic. A modality that is absent in
a row is fed as zeros with `present == False` (the graph then uses the learned missing
embedding), so one graph serves every combination of modalities. Outputs: `<task>.logits`.
`OnnxModel` runs such a graph through onnxruntime behind the same call as the PyTorch model,
so prediction, evaluation and the ablation need no second code path.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from torch import nn

ONNX_HINT = "ONNX export and the onnx backend need: pip install 'mmfit[onnx]'"
OPSET = 17


def input_spec(pre, cfg) -> dict[str, dict[str, tuple[tuple[int, ...], torch.dtype]]]:
    """Per modality, its input tensors' per-row shapes and dtypes (what a Batch carries)."""
    out = {}
    for m in pre.modalities:
        if m in pre.texts:
            n = cfg.data.text.max_length
            out[m] = {"input_ids": ((n,), torch.int64), "attention_mask": ((n,), torch.bool)}
        elif m == "tabular":
            tab = pre.tabular
            k, c = len(tab.numeric), len(tab.categorical)
            out[m] = {"values": ((k,), torch.float32), "categories": ((c,), torch.int64),
                      "feature_mask": ((k + c,), torch.bool)}
        else:
            out[m] = {"x": (pre.files[m].feature_shape(), torch.float32)}  # as the model sees it
    return out


def input_names(spec: dict) -> list[str]:
    names = []
    for m, tensors in spec.items():
        names += [f"{m}.{k}" for k in tensors] + [f"{m}.present"]
    return names


class ExportWrapper(nn.Module):
    """Flat positional tensors in `input_names` order -> logits per task, in `tasks` order."""

    def __init__(self, model, spec: dict):
        super().__init__()
        self.model, self.spec, self.tasks = model, spec, list(model.heads)

    def forward(self, *flat):
        it = iter(flat)
        inputs, present = {}, {}
        for m, tensors in self.spec.items():
            inputs[m] = {k: next(it) for k in tensors}
            present[m] = next(it)
        logits = self.model(inputs, present).logits
        return tuple(logits[t] for t in self.tasks)


def example_inputs(spec: dict, n: int = 2, random_ids: Optional[dict[str, int]] = None) -> tuple[torch.Tensor, ...]:
    """Inputs in `input_names` order. Masks are partly False: libraries skip their masking code
    when a mask is all True (a Python-level check), and the tracer would freeze that shortcut
    into the graph. Integer inputs are drawn below `random_ids[name]` (default: zeros)."""
    flat = []
    for m, tensors in spec.items():
        for k, (shape, dt) in tensors.items():
            if dt == torch.bool:
                mask = torch.ones((n, *shape), dtype=torch.bool)
                if shape and shape[0] > 1:
                    mask[1:, shape[0] // 2:] = False
                flat.append(mask)
            elif dt == torch.int64:
                flat.append(torch.randint(0, (random_ids or {}).get(f"{m}.{k}", 1), (n, *shape)))
            else:
                flat.append(torch.rand((n, *shape)))
        flat.append(torch.arange(n) % 2 == 0)
    return tuple(flat)


def flatten_batch(spec: dict, inputs: dict, present: dict) -> dict[str, np.ndarray]:
    feed = {}
    for m, tensors in spec.items():
        for k, (_, dt) in tensors.items():
            feed[f"{m}.{k}"] = inputs[m][k].to(dt).cpu().numpy()
        feed[f"{m}.present"] = present[m].to(torch.bool).cpu().numpy()
    return feed


def export_onnx(model, pre, cfg, path: Union[str, Path]) -> Path:
    """Trace the model in eval mode into `path` (ONNX, opset 17, dynamic batch)."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ImportError(ONNX_HINT) from None
    path = Path(path)
    spec = input_spec(pre, cfg)
    wrapper = ExportWrapper(model, spec).eval()  # export restores the wrapper's mode onto the model
    names = input_names(spec)
    outputs = [f"{t}.logits" for t in wrapper.tasks]
    axes = {n: {0: "batch"} for n in names + outputs}
    tmp = path.with_name(f".{path.name}.tmp")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer chatter about python values becoming constants
        torch.onnx.export(wrapper, example_inputs(spec, 2), str(tmp), input_names=names, output_names=outputs,
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    tmp.replace(path)
    return path


@dataclass
class _Out:
    logits: dict[str, torch.Tensor]


class OnnxModel:
    """An ONNX graph behind the PyTorch model's call: `model(inputs, present).logits`."""

    def __init__(self, path: Union[str, Path], spec: dict, tasks: list[str], threads: int = 0):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ImportError(ONNX_HINT) from None
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        # fold DequantizeLinear of constant weights (onnx-int8's int8-stored conv weights) into fp32
        # at load, so convolutions keep their fused kernels (2.7x slower on emoji otherwise)
        opts.add_session_config_entry("session.disable_quant_qdq", "1")
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.spec, self.tasks, self.path = spec, tasks, Path(path)
        self.modalities = list(spec)

    def __call__(self, inputs, present) -> _Out:
        outs = self.session.run([f"{t}.logits" for t in self.tasks], flatten_batch(self.spec, inputs, present))
        return _Out({t: torch.from_numpy(o) for t, o in zip(self.tasks, outs)})

    def eval(self):
        return self


def export_run(run: Union[str, Path], fmt: str = "onnx", output: Optional[Union[str, Path]] = None,
               data: Optional[Union[str, Path]] = None) -> dict:
    """Export a run's model to RUN/model.onnx (or `output`) and measure parity with PyTorch on real
    rows: all modalities present, and each modality missing in turn. Writes RUN/export.json."""
    import json

    from mmfit.deploy.predictor import Predictor
    from mmfit.optimize import derive

    if fmt != "onnx":
        raise ValueError(f"--format: only onnx is supported, not {fmt!r}")
    run = Path(run)
    pred = Predictor.load(run)
    if any(s["method"] == "dynamic-int8" for s in derive.read_record(run)["steps"]):
        raise ValueError(f"{run} holds PyTorch int8 layers, which ONNX cannot express; export its source run, "
                         f"or quantize it with --method onnx-int8")
    path = Path(output) if output else run / "model.onnx"
    export_onnx(pred.model, pred.pre, pred.cfg, path)
    spec = input_spec(pred.pre, pred.cfg)
    onnx_model = OnnxModel(path, spec, list(pred.model.heads))
    batch, probe = derive.sample_batch(pred, data)
    parity = {"all present": derive.max_diff(derive.logits(pred.model, batch), derive.logits(onnx_model, batch))}
    for m in pred.model.modalities:
        b = derive.without(batch, m)
        parity[f"without {m}"] = derive.max_diff(derive.logits(pred.model, b), derive.logits(onnx_model, b))
    report = {"format": "onnx", "opset": OPSET, "path": str(path), "size_mb": derive.megabytes(path),
              "inputs": input_names(spec), "outputs": [f"{t}.logits" for t in pred.model.heads],
              "checked_on": probe, "max_abs_diff_logits": parity, "max_abs_diff": max(parity.values())}
    (run / "export.json").write_text(json.dumps(report, indent=2))
    return report
