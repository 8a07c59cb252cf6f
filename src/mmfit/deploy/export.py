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

from mmfit.device import onnx_providers
from mmfit.evaluation.parity import encoders_run_once, logits, max_diff, without
from mmfit.run.files import size_mb, tensors_digest
from mmfit.run.layout import EXPORT, ONNX
from mmfit.run.loaded import load_run
from mmfit.run.store import Run
from mmfit.tasks import task_kind
from mmfit.version import __version__

ONNX_HINT = "ONNX export and the onnx backend need: pip install 'mmfit[onnx]'"
OPSET = 17


def signature(pre) -> dict[str, dict[str, tuple[tuple[int, ...], torch.dtype]]]:
    """The graph's inputs per modality: what a Batch carries (Preprocessor.input_spec), less the
    zero-width tensors of a table without numbers or without categories (a graph input nothing reads
    is dropped by the exporter, so the wrapper builds those inside the graph instead). The one
    signature the exporter, the runner and the parity checks all read."""
    return {m: {k: (shape, dt) for k, (shape, dt) in tensors.items() if 0 not in shape}
            for m, tensors in pre.input_spec().items()}


def input_names(spec: dict) -> list[str]:
    names = []
    for m, tensors in spec.items():
        names += [f"{m}.{k}" for k in tensors] + [f"{m}.present"]
    return names


class ExportWrapper(nn.Module):
    """Flat positional tensors in `input_names` order -> logits per task, in `tasks` order. Tensors
    the signature leaves out (zero-width) are made here, with the batch size of the present mask."""

    def __init__(self, model, pre):
        super().__init__()
        self.model, self.tasks = model, list(pre.targets)
        self.full, self.spec = pre.input_spec(), signature(pre)

    def forward(self, *flat):
        it = iter(flat)
        inputs, present = {}, {}
        for m, tensors in self.spec.items():
            inputs[m] = {k: next(it) for k in tensors}
            present[m] = next(it)
            b = present[m].shape[0]
            for k, (shape, dt) in self.full[m].items():
                if k not in inputs[m]:
                    inputs[m][k] = torch.zeros((b, *shape), dtype=dt, device=present[m].device)
        logits = self.model(inputs, present).logits
        return tuple(logits[t] for t in self.tasks)


def example_inputs(spec: dict, n: int = 2) -> tuple[torch.Tensor, ...]:
    """Tracing inputs in `input_names` order. Masks are partly False: libraries skip their masking
    code when a mask is all True (a Python-level check), and the tracer would freeze that shortcut
    into the graph. Integer inputs are zeros."""
    flat = []
    for m, tensors in spec.items():
        for k, (shape, dt) in tensors.items():
            if dt == torch.bool:
                mask = torch.ones((n, *shape), dtype=torch.bool)
                if shape and shape[0] > 1:
                    mask[1:, shape[0] // 2:] = False
                flat.append(mask)
            elif dt == torch.int64:
                flat.append(torch.zeros((n, *shape), dtype=torch.int64))
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


def export_onnx(model, pre, path: Union[str, Path]) -> Path:
    """Trace the model in eval mode into `path` (ONNX, opset 17, dynamic batch). The tracer leaves
    out an input the model never reads (an ensemble that weighs one modality's head only): the
    runner then feeds the signature's inputs that the graph has."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ImportError(ONNX_HINT) from None
    path = Path(path)
    wrapper = ExportWrapper(model, pre).eval()  # export restores the wrapper's mode onto the model
    spec = wrapper.spec
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

    def __init__(self, path: Union[str, Path], pre, tasks: list[str], threads: int = 0, device: str = "cpu"):
        """`device`: a resolved device (mmfit.device); a GPU runs the graph on ONNX Runtime's CUDA
        provider where onnxruntime-gpu is installed, else on the CPU (`self.providers` says which)."""
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
        self.session = ort.InferenceSession(str(path), opts, providers=onnx_providers(device))
        self.providers = self.session.get_providers()
        self.spec, self.tasks, self.path = signature(pre), tasks, Path(path)
        self.modalities = list(self.spec)
        have, want = {i.name for i in self.session.get_inputs()}, input_names(self.spec)
        if have - set(want):
            raise ValueError(f"{path} takes the inputs {sorted(have)}, but this run's signature is {sorted(want)}; "
                             "export the run again (mmfit export RUN)")
        self.reads = [n for n in want if n in have]  # the signature's inputs the graph has

    def __call__(self, inputs, present) -> _Out:
        feed = flatten_batch(self.spec, inputs, present)
        outs = self.session.run([f"{t}.logits" for t in self.tasks], {n: feed[n] for n in self.reads})
        return _Out({t: torch.from_numpy(o) for t, o in zip(self.tasks, outs)})

    def eval(self):
        return self


def export_run(run: Union[str, Path], fmt: str = "onnx", output: Optional[Union[str, Path]] = None,
               data: Optional[Union[str, Path]] = None) -> dict:
    """Export a run's model to RUN/model.onnx (or `output`) and measure parity with PyTorch on real
    rows: all modalities present, and each modality missing in turn. Writes RUN/export.json."""
    if fmt != "onnx":
        raise ValueError(f"--format: only onnx is supported, not {fmt!r}")
    run = Run(run)
    writes = [t for t, tc in run.config().data.targets.items() if task_kind(tc.type).writes]
    if writes:
        raise ValueError(f"{run}: task '{writes[0]}' writes text step by step (a decoding loop), which this "
                         "export does not put into one ONNX graph; serve the run with the torch backend")
    if any(s["method"] == "dynamic-int8" for s in run.record()["steps"]):
        raise ValueError(f"{run} holds PyTorch int8 layers, which ONNX cannot express; export its source run, "
                         f"or quantize it with --method onnx-int8")
    loaded = load_run(run)
    path = export_onnx(loaded.model, loaded.pre, Path(output) if output else run / ONNX)
    graph = OnnxModel(path, loaded.pre, list(loaded.pre.targets))
    batch, probe = loaded.sample_batch(data)
    report = {"format": "onnx", "opset": OPSET, "path": str(path.resolve()), "size_mb": size_mb(path),
              "inputs": graph.reads, "outputs": [f"{t}.logits" for t in loaded.pre.targets],
              "checked_on": probe, **parity(loaded.model, graph, batch),
              "weights_digest": tensors_digest(loaded.model.state_dict()), "mmfit": __version__}
    run.write_json(EXPORT, report)
    return report


def current_export(loaded) -> Optional[Path]:
    """The run's own model.onnx where `mmfit export` traced it from these very weights with this
    version of mmfit (export.json says so), else None: a graph that may be reused instead of traced
    again (quantize --method onnx-int8)."""
    done = loaded.run.read_json(EXPORT)  # None where the run was never exported
    path = loaded.run.path / ONNX
    if not done or not path.exists() or done.get("opset") != OPSET or done.get("mmfit") != __version__:
        return None
    if Path(done.get("path", "")).resolve() != path.resolve():
        return None
    return path if done.get("weights_digest") == tensors_digest(loaded.model.state_dict()) else None


def parity(model, other, batch) -> dict:
    """Largest logit difference between two models, with all modalities and with each one missing
    (the PyTorch model's encoders run once for all the variants)."""
    with encoders_run_once(model):
        diffs = {"all present": max_diff(logits(model, batch), logits(other, batch))}
        for m in model.modalities:
            b = without(batch, m)
            diffs[f"without {m}"] = max_diff(logits(model, b), logits(other, b))
    return {"max_abs_diff_logits": diffs, "max_abs_diff": max(diffs.values())}
