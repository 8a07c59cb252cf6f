"""Predictor: everything needed to predict comes from the run directory (nothing pickled)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np
import pandas as pd
from safetensors.torch import load_file

from mmfit.config import load_config
from mmfit.data.batch import TensorData
from mmfit.data.errors import RowError
from mmfit.data.manifest import read_manifest
from mmfit.data.prepare import Preprocessor
from mmfit.models.model import build_model
from mmfit.optimize.derive import read_record
from mmfit.optimize.prune import conform_to_state
from mmfit.optimize.quantize import load_state
from mmfit.training.evaluate import evaluate_data, predict_data


def model_from_run(cfg, pre, run_dir: Path):
    """A run's model, built from its config and architectures, with its model.safetensors."""
    model = build_model(cfg, pre, run_dir=run_dir)
    # pruned layers and trimmed vocabularies are smaller than the config builds them;
    # quantized runs hold int8 / half tensors: both are read from the tensors themselves
    state = load_file(str(run_dir / "model.safetensors"))
    try:
        conform_to_state(model, state)
        load_state(model, state)
    except RuntimeError as e:
        raise RuntimeError(f"{run_dir / 'model.safetensors'}: {e}") from None
    return model


def decisions(proc, outputs: np.ndarray) -> list:
    """Per row of a task's outputs (probabilities): the class (classification), or the classes at
    probability >= 0.5 (multilabel). One rule for predict() and the server."""
    if proc.type == "classification":
        return [proc.classes[i] for i in outputs.argmax(1)]
    return [[c for c, p in zip(proc.classes, r) if p >= 0.5] for r in outputs]


class Predictor:
    def __init__(self, run_dir: Path, cfg, pre: Preprocessor, model, device="cpu", precision: str = "fp32"):
        self.run_dir, self.cfg, self.pre, self.model, self.device = run_dir, cfg, pre, model, device
        self.precision = precision

    @classmethod
    def load(cls, run_dir: Union[str, Path], device: str = "cpu", backend: str = "torch",
             threads: int = 0) -> "Predictor":
        """backend="torch" (model.safetensors, pruned / quantized ones included) or "onnx"
        (model.onnx through onnxruntime, written by `mmfit export` or `mmfit quantize --method onnx-int8`)."""
        run_dir = Path(run_dir)
        weights = {"torch": "model.safetensors", "onnx": "model.onnx"}.get(backend)
        if weights is None:
            raise ValueError(f"backend must be torch or onnx, not {backend!r}")
        for f in ("config.yaml", "labels.json", weights):
            if not (run_dir / f).exists():
                hint = f" (run: mmfit export {run_dir})" if f == "model.onnx" else ""
                raise FileNotFoundError(f"{run_dir} is not a complete run directory: {f} is missing{hint}")
        cfg = load_config(run_dir / "config.yaml")
        pre = Preprocessor.load(cfg, run_dir)
        steps = read_record(run_dir)["steps"]
        precision = next((s["precision"] for s in reversed(steps) if "precision" in s), "fp32")
        if backend == "onnx":
            from mmfit.deploy.export import OnnxModel, input_spec

            model = OnnxModel(run_dir / "model.onnx", input_spec(pre, cfg), list(cfg.data.targets), threads)
            return cls(run_dir, cfg, pre, model, "cpu", "fp32")
        model = model_from_run(cfg, pre, run_dir)
        model.to(device).eval()
        return cls(run_dir, cfg, pre, model, device, precision)

    def _frame(self, data, root) -> tuple[pd.DataFrame, Path]:
        """File paths in new data resolve against `root`, else the manifest's folder, else the cwd."""
        if isinstance(data, (str, Path)):
            path = Path(data)
            return read_manifest(path), Path(root) if root else path.resolve().parent
        return data, Path(root) if root else Path.cwd()

    def predict(self, data, root=None, on_error: str = "raise", batch_size: int = 64) -> pd.DataFrame:
        """DataFrame or manifest path -> one row per input row: label and class probabilities per task.
        Rows may lack any modality. Bad rows raise (or, with on_error='skip', are left out and
        listed in `self.last_errors`)."""
        df, root = self._frame(data, root)
        tensors, errors = self.pre.transform(df, root, on_error=on_error, log=lambda *_: None)
        self.last_errors = errors.errors
        preds = predict_data(self.model, tensors, self.pre, batch_size, self.device, precision=self.precision)
        out = pd.DataFrame({"row": tensors.rows.numpy()})
        for t, proc in self.pre.targets.items():
            o = preds[t]["output"]
            if proc.type == "regression":
                out[t] = o
                continue
            chosen = decisions(proc, o)
            out[t] = chosen if proc.type == "classification" else [proc.cfg.separator.join(c) for c in chosen]
            for j, c in enumerate(proc.classes):
                out[f"{t}_prob_{c}"] = o[:, j]
        return out

    # ------------------------------------------------------------------ records (the server)
    def prepare(self, records: list[dict]) -> tuple[TensorData, list[RowError]]:
        """Records {column: value} -> (TensorData of the good records, their errors by record index).
        Image and audio values must be the file's bytes: a path is refused, never opened."""
        cols = list(self.cfg.data.columns)
        df = pd.DataFrame([[r.get(c) for c in cols] for r in records], columns=cols, dtype=object)
        data, errors = self.pre.transform(df, None, on_error="skip", log=lambda *_: None)
        return data, errors.errors

    def infer(self, data: TensorData, explain: bool = False, batch_size: int = 64) -> list[dict]:
        """One result per row: per task its label and probabilities (or value); with `explain`, how
        much the first task's prediction leans on each present modality."""
        preds = predict_data(self.model, data, self.pre, batch_size, self.device, precision=self.precision)
        results: list[dict] = [{} for _ in range(len(data))]
        for t, proc in self.pre.targets.items():
            o = preds[t]["output"]
            if proc.type == "regression":
                for r, v in zip(results, o):
                    r[t] = {"value": float(v)}
                continue
            key = "label" if proc.type == "classification" else "labels"
            for r, chosen, row in zip(results, decisions(proc, o), o):
                r[t] = {key: chosen, "probabilities": {c: float(p) for c, p in zip(proc.classes, row)}}
        if explain:
            for r, e in zip(results, self.modality_importance(data, preds, batch_size)):
                r["explanation"] = e
        return results

    def modality_importance(self, data: TensorData, preds: Optional[dict] = None, batch_size: int = 64) -> list[dict]:
        """Occlusion per row: how far the first task's prediction moves when one present modality
        is removed (the probability of the predicted class, or the regression value) and each
        modality's share of those moves. -> [{modality: {"present", "change", "share"}}]."""
        task = next(iter(self.pre.targets))
        proc = self.pre.targets[task]
        preds = preds or predict_data(self.model, data, self.pre, batch_size, self.device, precision=self.precision)
        base = preds[task]["output"]
        cls = base.argmax(1) if proc.type == "classification" else None
        rows = np.arange(len(data))
        change = {}
        for m in self.model.modalities:
            out = predict_data(self.model, data, self.pre, batch_size, self.device, drop=[m],
                               precision=self.precision)[task]["output"]
            if proc.type == "classification":
                change[m] = base[rows, cls] - out[rows, cls]
            elif proc.type == "multilabel":
                change[m] = np.abs(base - out).mean(1)
            else:
                change[m] = np.abs(base - out) / (proc.std or 1.0)
        result = []
        for i in rows:
            present = {m: bool(data.present[m][i]) for m in change}
            moved = {m: max(float(change[m][i]), 0.0) if present[m] else 0.0 for m in change}
            total = sum(moved.values())
            result.append({m: {"present": present[m], "change": float(change[m][i]) if present[m] else 0.0,
                               "share": moved[m] / total if total > 0 else 0.0} for m in change})
        return result

    def evaluate(self, data, root=None, ablation: bool = True) -> dict:
        df, root = self._frame(data, root)
        tensors, _ = self.pre.transform(df, root, on_error="raise", log=lambda *_: None)
        return evaluate_data(self.model, tensors, self.pre, 64, self.device, ablation=ablation,
                             precision=self.precision)

