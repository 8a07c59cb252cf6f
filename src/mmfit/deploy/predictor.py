"""Predictor: a run read back from its directory (nothing pickled), what `mmfit.fit` returns. It
predicts DataFrames and manifests (`predict`, `predict_proba`, `evaluate`, `extract_embedding`),
lists what the run weighed (`leaderboard`), copies itself (`save`), and serves the server's records
(`prepare` -> `infer`) with an occlusion explanation per row (`modality_importance`).

    pred = mmfit.fit("train.csv", target="label", time_limit="10m")   # or Predictor.load(RUN)
    pred.predict(df); pred.predict_proba(df); pred.leaderboard(); pred.extract_embedding(df)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Union

import numpy as np
import pandas as pd

from mmfit.config import input_fields
from mmfit.device import resolve_device
from mmfit.data.batch import TensorData
from mmfit.data.errors import RowError
from mmfit.data.infer import MEDIA_EXT, files_under
from mmfit.data.manifest import read_manifest
from mmfit.run.files import atomic_copytree
from mmfit.run.layout import CHECKPOINTS, ENSEMBLE, EVAL, METRICS, ONNX
from mmfit.run.loaded import LoadedRun, load_run
from mmfit.run.store import Run


def decisions(proc, outputs: np.ndarray) -> list:
    """Per row of a task's outputs (probabilities): the class (classification), or the classes at
    probability >= 0.5 (multilabel). One rule for predict() and the server."""
    if proc.kind.exclusive:
        return [proc.classes[i] for i in outputs.argmax(1)]
    return [[c for c, p in zip(proc.classes, r) if p >= 0.5] for r in outputs]


def top_k(queries: np.ndarray, gallery: np.ndarray, k: int) -> pd.DataFrame:
    """Cosine top-k of unit vectors: one row per (query, rank)."""
    sim = queries @ gallery.T
    k = min(k, gallery.shape[0])
    idx = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    return pd.DataFrame({"query": np.repeat(np.arange(len(queries)), k), "rank": np.tile(np.arange(1, k + 1), len(queries)),
                         "gallery": idx.reshape(-1), "score": np.take_along_axis(sim, idx, 1).reshape(-1)})


def match_scores(outputs: np.ndarray) -> np.ndarray:
    """A matching task's outputs [N, 2, D] (unit vectors) -> each row's cosine of its two sides."""
    return (outputs[:, 0] * outputs[:, 1]).sum(-1) if len(outputs) else np.zeros(0)


def leaderboard(run: Run) -> pd.DataFrame:
    """Every candidate the run weighed, best first: per task, each member's head with its
    validation scores, its ensemble weight (0: not chosen) and what it was trained on. A run of
    one model: one row, its validation scores at the kept epoch."""
    spec = run.read_json(ENSEMBLE)
    rows = []
    if spec:
        for task, cands in spec.get("validation", {}).items():
            chosen = {(w["member"], w["head"]): w for w in spec["weights"].get(task, [])}
            for name, scores in cands.items():
                member, head = name.split("/", 1)
                w = chosen.get((member, head), {})
                rows.append({"task": task, "member": member, "head": head,
                             **{f"val_{k}": v for k, v in scores.items()}, "weight": w.get("weight", 0.0),
                             "temperature": w.get("temperature"), "trained_on": w.get("trained_on", "train")})
    else:
        for task, scores in validation_scores(run).items():
            rows.append({"task": task, "member": run.name, "head": "fused",
                         **{f"val_{k}": v for k, v in scores.items()}, "weight": 1.0, "temperature": None,
                         "trained_on": "train"})
    board = pd.DataFrame(rows)
    if board.empty:
        return board
    key = next((c for c in ("val_macro_f1", "val_r2", "val_recall@1", "val_rouge_l") if c in board), None)
    by, asc = ["task", "weight"] + ([key] if key else []), [True, False] + ([False] if key else [])
    return board.sort_values(by, ascending=asc, kind="stable").reset_index(drop=True)


def validation_scores(run: Run) -> dict:
    """A single model's validation scores per task: RUN/eval/val.json, else the kept epoch's
    line of metrics.jsonl; {} when it had no validation rows."""
    saved = run.read_json(f"{EVAL}/val.json")
    if saved:
        return {t: {k: v for k, v in m.items() if isinstance(v, (int, float))}
                for t, m in saved.get("metrics", {}).items()}
    if not run.has(METRICS):
        return {}
    lines = [json.loads(x) for x in (run / METRICS).read_text().splitlines() if x.strip()]
    kept = [x for x in lines if x.get("val") and x.get("monitor") and x["val"].get(x["monitor"]) == x.get("best")]
    flat = (kept[-1] if kept else (lines[-1] if lines else {})).get("val", {})
    out: dict = {}
    for key, v in flat.items():
        task, _, metric = key.rpartition("/")
        if task:
            out.setdefault(task, {})[metric] = v
    return out


class Predictor(LoadedRun):
    """A run ready to use; `path` is its directory (a Predictor also stands where a path is
    expected: `os.fspath(pred)`, `pred / "config.yaml"`)."""

    @property
    def path(self) -> Path:
        return self.run.path

    def __fspath__(self) -> str:
        return str(self.run.path)

    def __truediv__(self, name: str) -> Path:
        return self.run.path / name

    def __str__(self) -> str:
        return str(self.run.path)

    @property
    def last_errors(self) -> list:
        """Every bad value the last `predict` met (its ErrorLog is `last_log`)."""
        return self.last_log.errors

    def _read(self, data, root, on_error: str):
        """Rows (a DataFrame, a manifest, a folder or a file) -> (the table, its model inputs); the bad
        values met, per `on_error`, are kept in `last_log`."""
        df, root = self.table(data, root)
        tensors, self.last_log = self.pre.transform(df, root, on_error=on_error, log=lambda *_: None)
        return df, tensors

    @classmethod
    def load(cls, run_dir: Union[str, Path], device: str = "auto", backend: str = "torch",
             threads: int = 0) -> "Predictor":
        """backend="torch" (model.safetensors, pruned / quantized ones included) or "onnx"
        (model.onnx through onnxruntime, written by `mmfit export` or `mmfit quantize --method onnx-int8`).
        `device`: auto (a CUDA GPU where there is one), cpu, cuda or cuda:N; ONNX Runtime takes its
        CUDA provider on a GPU where onnxruntime-gpu is installed. Dynamic-int8 runs stay on the CPU."""
        run = Run(getattr(run_dir, "path", run_dir))
        device = resolve_device(device)
        if run.cpu_only() and device != "cpu":  # PyTorch's dynamic int8 layers have CPU kernels only
            device = "cpu"
        if backend == "torch":
            return cls(**vars(load_run(run, device)))
        if backend != "onnx":
            raise ValueError(f"backend must be torch or onnx, not {backend!r}")
        from mmfit.deploy.export import OnnxModel

        run.require(ONNX, hint=f" (run: mmfit export {run})")
        cfg = run.config()
        pre = run.preprocessor(cfg)  # onnxruntime takes numpy on the CPU side; `device` picks its provider
        return cls(run, cfg, pre, OnnxModel(run / ONNX, pre, list(cfg.data.targets), threads, device))

    def save(self, path: Union[str, Path]) -> "Predictor":
        """Copy the run directory (members, encoders and fitted preprocessing included; not the
        resume checkpoints) to `path`, which must not exist; -> the Predictor there. The copy is
        written beside `path` and renamed, so a failed save leaves nothing half-written."""
        atomic_copytree(self.run.path, Path(path), ignore=(CHECKPOINTS,))
        return type(self).load(path, device=self.device)

    def predict_proba(self, data, root=None, task: Optional[str] = None, on_error: str = "raise",
                      batch_size: int = 64) -> pd.DataFrame:
        """Class probabilities (multilabel: each label's), one column per class, one row per input
        row (`row`: its index in the data). `task`: default the first classification or multilabel one."""
        kinds = {t: p.type for t, p in self.pre.targets.items()}
        probs = [t for t, p in self.pre.targets.items() if p.kind.labels]
        task = task or (probs[0] if probs else None)
        if task not in probs:
            raise ValueError(f"predict_proba: {task!r} is not a classification or multilabel task of this run "
                             f"(tasks: {', '.join(f'{t} ({k})' for t, k in kinds.items())})")
        _, tensors = self._read(data, root, on_error)
        o = self.predict_tensors(tensors, batch_size)[task]["output"]
        out = pd.DataFrame(o, columns=list(self.pre.targets[task].classes))
        out.index = pd.Index(tensors.rows.numpy(), name="row")
        return out

    def extract_embedding(self, data, root=None, modality: Optional[str] = None, on_error: str = "raise",
                          batch_size: int = 64) -> np.ndarray:
        """[N, D]: each row's fused representation, the vector the task heads read (an ensemble: its
        leading member's); with `modality`, that modality's own pooled embedding. Any run (not only
        matching ones: `embed` gives a matching task's shared space)."""
        _, tensors = self._read(data, root, on_error)
        return self.embed_tensors(tensors, batch_size, modality)

    def embeddings(self, data, root=None, on_error: str = "raise", batch_size: int = 64) -> pd.DataFrame:
        """Rows -> the same rows with each file and text column the model encodes replaced by its
        pooled embedding (`<column>_embedding`: a list of floats, None where the row lacks it), every
        other column (numbers, targets, ids) kept as it is: a table a run trains on without reading,
        decoding or encoding those files again (`mmfit embed`; in Parquet the lists are arrays, which
        zero-config reads as vector columns). `row`: each row's index in the data; bad rows as in
        `predict` (`self.last_errors`)."""
        df, tensors = self._read(data, root, on_error)
        rows = tensors.rows.numpy()
        kept = df.iloc[rows].reset_index(drop=True)
        out = pd.DataFrame({"row": rows})
        for c in self.embedding_columns(list(df.columns)):
            if c in kept.columns:
                out[c] = kept[c].to_numpy()
        encoded = self.embedded()
        vectors = self.embed_tensors(tensors, batch_size, modality=encoded) if encoded else {}  # one pass
        for m, v in vectors.items():
            present = tensors.present[m].numpy()
            out[f"{m}_embedding"] = [x.tolist() if p else None for x, p in zip(v, present)]  # float32 already
        return out

    def embedded(self) -> list[str]:
        """The modalities `embeddings` replaces by vectors: every one with an encoder of its own (the
        table's numbers stay as they are)."""
        return [m for m in self.model.modalities if m != "tabular"]

    def embedding_columns(self, columns: list[str]) -> list[str]:
        """The columns `embeddings` gives after `row`, for data with these columns: the ones kept, then
        an embedding per encoded modality. A modality reading another column (a video's sound track)
        replaces that column too."""
        cols = self.cfg.data.columns
        gone = {x for m in self.embedded() for x in (m, cols[m].source if m in cols else None) if x}
        return [c for c in columns if c not in gone] + [f"{m}_embedding" for m in self.embedded()]

    def leaderboard(self) -> pd.DataFrame:
        """Every candidate the run weighed (see `leaderboard`)."""
        return leaderboard(self.run)

    def table(self, data, root=None) -> tuple[pd.DataFrame, Path]:
        """File paths in new data resolve against `root`, else the manifest's folder; a DataFrame's
        against the run's data.root where it set one (what its training rows resolved against),
        else the cwd. A folder is a table of its files (`folder_rows`)."""
        if isinstance(data, (str, Path)):
            path = Path(data)
            if path.is_dir():
                return self.folder_rows(path), path.resolve()
            if path.suffix.lower() in MEDIA_EXT and path.is_file():  # one image, sound or video
                return self.folder_rows(path.parent, only=path), path.resolve().parent
            return read_manifest(path), Path(root) if root else path.resolve().parent
        return data, Path(root or self.cfg.data.root or Path.cwd())

    def folder_rows(self, folder: Path, only: Optional[Path] = None) -> pd.DataFrame:
        """A folder of files for a run with one file input (a folder of images to label): a row per
        image, sound or video file under it (paths relative to it, sorted; `only`: that one file).
        Where the files sit in subfolders named after the classes of the run's one classification
        target (the layout a class folder is trained from), that name is the row's label, so
        `evaluate --data` scores it."""
        from mmfit.config import FILE_KINDS

        cols = [c for c, k in self.cfg.data.columns.items() if k.role in FILE_KINDS and not k.source]
        if len(cols) != 1:
            raise ValueError(f"{only or folder}: files are read as one per row, for a run with one file input; this "
                             f"run reads {len(cols)} ({', '.join(cols) or 'none'}): give a manifest")
        files = [only] if only else [f for f in files_under(folder) if f.suffix.lower() in MEDIA_EXT]
        if not files:
            raise ValueError(f"{folder}: no image, sound or video files in it")
        df = pd.DataFrame({cols[0]: [str(f.relative_to(folder)) for f in files]})
        labels = [t for t, proc in self.pre.targets.items() if proc.kind.exclusive]
        parents = [f.relative_to(folder).parts for f in files]
        if len(labels) == 1 and all(len(x) == 2 for x in parents) and \
                {x[0] for x in parents} <= set(self.pre.targets[labels[0]].classes):
            df[labels[0]] = [x[0] for x in parents]
        return df

    def predict(self, data, root=None, on_error: str = "raise", batch_size: int = 64) -> pd.DataFrame:
        """DataFrame or manifest path -> one row per input row: label and class probabilities per task.
        Rows may lack any modality, and the data an input column (absent in every row, one warning).
        Bad rows raise (or, with on_error='skip', are left out; with 'missing', an unreadable image or
        audio file leaves only its modality absent); every bad value is in `self.last_errors`."""
        _, tensors = self._read(data, root, on_error)
        preds = self.predict_tensors(tensors, batch_size)
        out = pd.DataFrame({"row": tensors.rows.numpy()})
        for t, proc in self.pre.targets.items():
            o = preds[t]["output"]
            if proc.kind.writes:  # the written text
                out[t] = list(o)
                continue
            if not proc.kind.labels:  # a value, or (matching) how well the row's two sides fit, -1 .. 1
                out[t] = o if proc.kind.numeric else match_scores(o)
                continue
            chosen = decisions(proc, o)
            out[t] = chosen if proc.kind.exclusive else [proc.cfg.separator.join(c) for c in chosen]
            for j, c in enumerate(proc.classes):
                out[f"{t}_prob_{c}"] = o[:, j]
        return out

    def output_columns(self) -> list[str]:
        """The columns `predict` gives after `row`: per task its decision (or value, or text), then a
        classification or multilabel task's probability of each class."""
        cols = []
        for t, proc in self.pre.targets.items():
            cols.append(t)
            if proc.kind.labels:
                cols += [f"{t}_prob_{c}" for c in proc.classes]
        return cols

    # ------------------------------------------------------------------ records (the server)
    def prepare(self, records: list[dict]) -> tuple[TensorData, list[RowError]]:
        """Records {column: value} -> (TensorData of the good records, their errors by record index).
        Image and audio values must be the file's bytes: a path is refused, never opened."""
        cols = list(input_fields(self.cfg.data))  # a video's sound track reads the video's field
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
            key = proc.kind.answer  # text, value, score, label or labels
            if proc.kind.writes:
                for r, text in zip(results, o):
                    r[t] = {key: str(text)}
                continue
            if not proc.kind.labels:  # a value, or (matching) how well the row's two sides fit
                for r, v in zip(results, o if proc.kind.numeric else match_scores(o)):
                    r[t] = {key: float(v)}
                continue
            for r, chosen, row in zip(results, decisions(proc, o), o):
                r[t] = {key: chosen, "probabilities": {c: float(p) for c, p in zip(proc.classes, row)}}
        if explain:
            for r, e in zip(results, self.modality_importance(data, preds, batch_size)):
                r["explanation"] = e
            from mmfit.evaluation.attribution import explain_rows, explainable, to_json

            if explainable(self.model) and any(p.kind.per_row for p in self.pre.targets.values()):
                try:
                    for r, a in zip(results, explain_rows(self, data, steps=16)):
                        r["attribution"] = to_json(a, max_side=32)
                except RuntimeError as e:  # a model without gradients (int8 layers): the occlusion shares stay
                    for r in results:
                        r["attribution"] = {"unavailable": f"no gradients through this model: {e}"}
        return results

    def explain(self, data, root=None, steps: int = 32, batch_size: int = 16) -> list[dict]:
        """Integrated gradients per row (evaluation/attribution.py): image and audio maps, text
        tokens' and numbers' scores, each modality's share, for the first classification /
        regression task's output. `data`: a DataFrame, a manifest path, or TensorData."""
        from mmfit.evaluation.attribution import explain_rows

        if not isinstance(data, TensorData):
            data, _ = self.read(data, root)
        return explain_rows(self, data, steps, batch_size)

    def modality_importance(self, data: TensorData, preds: Optional[dict] = None, batch_size: int = 64) -> list[dict]:
        """Occlusion per row: how far the first task's prediction moves when one present modality
        is removed (the probability of the predicted class, or the regression value) and each
        modality's share of those moves. -> [{modality: {"present", "change", "share"}}]."""
        task = next((t for t, p in self.pre.targets.items() if p.kind.per_row), None)
        if task is None:  # a matching or generation model alone: no class or value to explain by occlusion
            return [{} for _ in range(len(data))]
        proc = self.pre.targets[task]
        preds = preds or self.predict_tensors(data, batch_size)
        base = preds[task]["output"]
        cls = base.argmax(1) if proc.kind.exclusive else None
        rows = np.arange(len(data))
        change = {}
        for m in self.model.modalities:
            out = self.predict_tensors(data, batch_size, drop=[m])[task]["output"]
            if proc.kind.exclusive:
                change[m] = base[rows, cls] - out[rows, cls]
            elif proc.kind.label_set:
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

    # ------------------------------------------------------------------ matching: embed, search, zero-shot
    def matching_task(self, task: Optional[str] = None) -> str:
        tasks = [t for t, p in self.pre.targets.items() if p.kind.paired]
        if not tasks:
            raise ValueError(f"{self.run} has no matching task (data.targets.<name>.type: matching)")
        if task is not None and task not in tasks:
            raise ValueError(f"{task!r} is not a matching task of this run (have: {', '.join(tasks)})")
        return task or tasks[0]

    def embed(self, data, column: Optional[str] = None, task: Optional[str] = None, root=None,
              batch_size: int = 64) -> np.ndarray:
        """Rows (a DataFrame, a manifest, or records) -> [N, D] unit vectors of one side of a
        matching task, in its shared space. `column`: the side (default: the one the data has).
        The other input columns may be missing: those modalities are absent."""
        task = self.matching_task(task)
        between = self.pre.targets[task].cfg.between
        df, root = self.table(pd.DataFrame(data) if isinstance(data, list) else data, root)
        if column is None:
            have = [c for c in between if c in df.columns]
            if len(have) != 1:
                raise ValueError(f"embed: say which side (column=) of {between}; the data has {have or 'neither'}")
            column = have[0]
        if column not in between:
            raise ValueError(f"embed: column {column!r} is not a side of {task} ({between})")
        df = df.copy()
        for c in self.cfg.data.columns:  # absent modalities: the model handles them
            if c not in df.columns:
                df[c] = None
        tensors, errors = self.pre.transform(df, root, on_error="raise", log=lambda *_: None)
        return self.predict_tensors(tensors, batch_size)[task]["output"][:, between.index(column)]

    def search(self, query, gallery, k: int = 10, task: Optional[str] = None, root=None) -> pd.DataFrame:
        """For each query row, the k gallery rows whose other side fits best. `gallery`: rows with
        the other column, or their embeddings (from `embed`). -> query, rank, gallery row, score."""
        task = self.matching_task(task)
        between = self.pre.targets[task].cfg.between
        q = self.embed(query, task=task, root=root)
        qdf = query if isinstance(query, pd.DataFrame) else None
        side = next((c for c in between if qdf is not None and c in qdf.columns), None)
        other = [c for c in between if c != side][0] if side else None
        g = gallery if isinstance(gallery, np.ndarray) else self.embed(gallery, column=other, task=task, root=root)
        return top_k(q, g, k)

    def zero_shot(self, data, classes: list[str], template: str = "{}", task: Optional[str] = None, root=None,
                  column: Optional[str] = None) -> pd.DataFrame:
        """Classify rows by the class whose prompt (template.format(class), through the text side of
        the matching task) fits best: no labelled example needed. -> label and per-class scores."""
        task = self.matching_task(task)
        between = self.pre.targets[task].cfg.between
        text = [c for c in between if self.cfg.data.columns.get(c) and self.cfg.data.columns[c].role == "text"]
        if not text:
            raise ValueError(f"zero_shot needs a text side; {task} matches {between}")
        prompts = self.embed(pd.DataFrame({text[0]: [template.format(c) for c in classes]}), column=text[0], task=task)
        rows = self.embed(data, column=column or [c for c in between if c != text[0]][0], task=task, root=root)
        sim = rows @ prompts.T
        out = pd.DataFrame({"label": [classes[i] for i in sim.argmax(1)]})
        for j, c in enumerate(classes):
            out[f"score_{c}"] = sim[:, j]
        return out

    def read(self, data, root=None) -> tuple[TensorData, pd.DataFrame]:
        """A DataFrame or manifest path -> (its rows preprocessed, the DataFrame); bad rows raise."""
        df, root = self.table(data, root)
        return self.pre.transform(df, root, on_error="raise", log=lambda *_: None)[0], df

    def evaluate(self, data=None, root=None, ablation: bool = True, split: str = "test") -> dict:
        """Metrics (and the modality ablation) on labelled data, or without `data` on the run's own
        `split` (train, val or test)."""
        if data is None:
            return self.evaluate_tensors(self.data()[split], ablation)
        return self.evaluate_tensors(self.read(data, root)[0], ablation)

