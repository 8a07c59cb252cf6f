"""Predictor: a run read back from its directory (nothing pickled) that predicts: DataFrames and
manifests (`predict`, `evaluate`), and the server's records (`prepare` -> `infer`), with an
occlusion explanation per row (`modality_importance`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np
import pandas as pd

from mmfit.data.batch import TensorData
from mmfit.data.errors import RowError
from mmfit.data.manifest import read_manifest
from mmfit.run import ONNX, LoadedRun, Run


def decisions(proc, outputs: np.ndarray) -> list:
    """Per row of a task's outputs (probabilities): the class (classification), or the classes at
    probability >= 0.5 (multilabel). One rule for predict() and the server."""
    if proc.type == "classification":
        return [proc.classes[i] for i in outputs.argmax(1)]
    return [[c for c, p in zip(proc.classes, r) if p >= 0.5] for r in outputs]


class Predictor(LoadedRun):
    @classmethod
    def load(cls, run_dir: Union[str, Path], device: str = "cpu", backend: str = "torch",
             threads: int = 0) -> "Predictor":
        """backend="torch" (model.safetensors, pruned / quantized ones included) or "onnx"
        (model.onnx through onnxruntime, written by `mmfit export` or `mmfit quantize --method onnx-int8`)."""
        run = Run(run_dir)
        if backend == "torch":
            return cls(**vars(run.load(device)))
        if backend != "onnx":
            raise ValueError(f"backend must be torch or onnx, not {backend!r}")
        from mmfit.deploy.export import OnnxModel

        run.require(ONNX, hint=f" (run: mmfit export {run})")
        cfg = run.config()
        pre = run.preprocessor(cfg)
        return cls(run, cfg, pre, OnnxModel(run / ONNX, pre, list(cfg.data.targets), threads))

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
        preds = self.predict_tensors(tensors, batch_size)
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
        preds = self.predict_tensors(data, batch_size)
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
        preds = preds or self.predict_tensors(data, batch_size)
        base = preds[task]["output"]
        cls = base.argmax(1) if proc.type == "classification" else None
        rows = np.arange(len(data))
        change = {}
        for m in self.model.modalities:
            out = self.predict_tensors(data, batch_size, drop=[m])[task]["output"]
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
        return self.evaluate_tensors(tensors, ablation)

