"""The one owner of a run directory: what each file is called, writing it (atomically), reading it,
building the run's model from it, deriving a new run from it, and evaluating it on its splits.

Everything else asks this module: the training loop writes through a `Run`, Predictor / export /
compression / the report read through it. A run stands alone: its config holds absolute paths
(`run.json` keeps what they were given as), and a run folder moved together with its data, or
next to its manifest, still finds it.

    RUN/config.yaml          the fully resolved config (absolute paths)
    RUN/run.json             mmfit version, time, paths as given and relative to the run, its source
    RUN/model.safetensors    the kept weights, the whole model (pruned: smaller tensors; quantized: int8 +
                             scales); written once, when training ends
    RUN/labels.json          fitted preprocessing: label maps, statistics, tokenizer references
    RUN/tokenizer-<col>.json trained WordPiece tokenizers
    RUN/encoders/<m>/        architectures (and tokenizers) of Hugging Face encoders
    RUN/params.json          parameters per encoder and fine-tuning strategy
    RUN/metrics.jsonl, tb/   one line per epoch; TensorBoard
    RUN/checkpoints/last.safetensors   model + optimiser + RNG + counters (resume), each epoch
    RUN/checkpoints/best.safetensors   the best weights so far; both without the frozen tensors (frozen
    RUN/checkpoints/frozen.safetensors encoders, a LoRA's base), which go here, once a run
    RUN/eval/<split>.json    metrics and the modality ablation
    RUN/adapters/<m>/        LoRA / IA3 adapters in peft's format
    RUN/skipped.csv, skipped.json      rows left out (data.on_error: skip), cells made absent (missing)
    RUN/compression.json     (derived runs) every step from the source, with what it measured
    RUN/merge.json           (merged runs) parity with the adapted source
    RUN/model.onnx, export.json        (after export) the graph and its parity check
    RUN/ensemble.json, members/<name>/ (an ensemble, mmfit.fit) its members, each a run without its
                             checkpoints/ (never resumed), and their weights
    RUN/members/frozen-<hash>.safetensors  the frozen tensors members hold alike, once for them all
                             (a member's model.safetensors names the file in its metadata: Run.weights)
    RUN/candidates.npz       (an ensemble's member) its heads' logits on val and test, and the targets:
                             what the selection weighed, to inspect or select again without a forward pass
    RUN/report.html          (after mmfit report)
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from mmfit.config import Config, encoder_config, load_config, modality_kinds
from mmfit.data.batch import Batch, TensorData
from mmfit.data.manifest import read_manifest
from mmfit.data.modalities.text import TOKENIZER_FILE
from mmfit.data.prepare import Preprocessor, prepare_training
from mmfit.evaluation.predict import embed_data, evaluate_data, predict_data
from mmfit.version import __version__

PathLike = Union[str, Path]

CONFIG = "config.yaml"
INFO = "run.json"
WEIGHTS = "model.safetensors"
LABELS = "labels.json"
TOKENIZERS = TOKENIZER_FILE.format(column="*")
ENCODERS = "encoders"
PARAMS = "params.json"
METRICS = "metrics.jsonl"
TB = "tb"
CHECKPOINT = "checkpoints/last.safetensors"
BEST = "checkpoints/best.safetensors"  # the best weights so far, without the frozen tensors
FROZEN = "checkpoints/frozen.safetensors"  # the tensors training leaves as they are, written once a run
EVAL = "eval"
ADAPTERS = "adapters"
SKIPPED = "skipped.csv"
SKIPPED_SUMMARY = "skipped.json"
COMPRESSION = "compression.json"
MERGE = "merge.json"
ENSEMBLE = "ensemble.json"
CANDIDATES = "candidates.npz"
OOF = "oof.npz"  # a convex member's out-of-fold logits (training/convex.py)
MEMBERS = "members"
ONNX = "model.onnx"
EXPORT = "export.json"
REPORT = "report.html"
# what a run derived from this one (pruned, quantized, merged) starts from: how its data is read and
# what the model is made of, never what was learned (weights) or measured (evaluations, exports)
PREPROCESSING = (LABELS, TOKENIZERS, ENCODERS)
CARRIED = (CONFIG, *PREPROCESSING, PARAMS, SKIPPED, SKIPPED_SUMMARY)
# config keys that hold paths: stored absolute, so a run can be read from any working directory
PATH_KEYS = ("data.manifest", "data.root", "data.cache_dir", "distill.teacher", "train.output_dir")


# ---------------------------------------------------------------------------- files


def atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """safetensors through a temp file + fsync + rename: a kill leaves the old file or the new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        save_file(tensors, tmp, metadata=metadata)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write(path: Path, content: Union[str, bytes]) -> None:
    """Write text or bytes beside `path`, then rename over it: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if isinstance(content, bytes):
        tmp.write_bytes(content)
    else:
        tmp.write_text(content)
    tmp.replace(path)


def atomic_copytree(src: Path, dst: Path, ignore: tuple[str, ...] = ()) -> None:
    """Copy a folder to `dst` (which must not exist) through a temporary sibling and one rename:
    `dst` is either complete or absent."""
    dst = Path(dst)
    if dst.exists():
        raise FileExistsError(f"{dst} already exists; choose another path")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(src, tmp, ignore=shutil.ignore_patterns(*ignore) if ignore else None)
        tmp.rename(dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # shared tensors (tied embeddings) would be rejected by safetensors: clone each entry
    return {k: v.clone() for k, v in model.state_dict().items()}


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """A hash of named tensors: names, types, shapes and bytes."""
    h = hashlib.blake2b(digest_size=16)
    for k in sorted(tensors):
        t = tensors[k].detach().cpu().contiguous()
        h.update(f"{k}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def size_mb(path: Path) -> float:
    return round(Path(path).stat().st_size / 1e6, 3)


def _node(cfg: Config, key: str):
    """(the object holding a dotted key's value, its last part); mappings (model.encoders) included."""
    *parents, last = key.split(".")
    node = cfg
    for part in parents:
        node = node[part] if isinstance(node, dict) else getattr(node, part)
    return node, last


def _get(cfg: Config, key: str):
    node, last = _node(cfg, key)
    return getattr(node, last)


def _set(cfg: Config, key: str, value) -> None:
    node, last = _node(cfg, key)
    setattr(node, last, value)


def resolve_paths(cfg: Config) -> tuple[Config, dict[str, str]]:
    """A copy of `cfg` with every path absolute (against the working directory), and the paths as
    they were given: what a run records so that it reads the same files from anywhere."""
    cfg = copy.deepcopy(cfg)
    given = {}
    for key in list(PATH_KEYS) + [f"model.encoders.{m}.{k}" for m in cfg.model.encoders for k in ("path", "init")]:
        value = _get(cfg, key)
        if value:
            given[key] = str(value)
            _set(cfg, key, str(Path(value).expanduser().resolve()))
    return cfg, given


class Run:
    """A run directory. `run / NAME` is the path of one of its files (the names above)."""

    def __init__(self, path: PathLike):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __str__(self) -> str:
        return str(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    def has(self, name: str) -> bool:
        return (self.path / name).exists()

    def require(self, *names: str, hint: str = "") -> None:
        for f in (CONFIG, LABELS, *names):
            if not self.has(f):
                raise FileNotFoundError(f"{self.path} is not a complete run directory: {f} is missing{hint}")

    def eval_path(self, split: str) -> Path:
        return self.path / EVAL / f"{split}.json"

    def encoder_dir(self, modality: str) -> Path:
        return self.path / ENCODERS / modality

    # ------------------------------------------------------------------ writing
    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

    def write_text(self, name: str, text: str) -> Path:
        atomic_write(self.path / name, text)
        return self.path / name

    def write_json(self, name: str, obj: Any) -> Path:
        return self.write_text(name, json.dumps(obj, indent=2, default=str))

    def save_config(self, cfg: Config, given: dict[str, str]) -> None:
        """config.yaml (resolved paths) and run.json (the paths as given, and relative to the run)."""
        here = self.path.resolve()
        paths = {k: {"given": g, "resolved": _get(cfg, k), "from_run": os.path.relpath(_get(cfg, k), here)}
                 for k, g in given.items()}
        self.write_json(INFO, {**self.info(), "mmfit": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                               "paths": paths})
        self.write_text(CONFIG, cfg.to_yaml())

    def save_preprocessor(self, pre: Preprocessor) -> None:
        self.write_json(LABELS, pre.save(self.path, self.encoder_dir))

    def save_architectures(self, model) -> None:
        """What rebuilds pretrained encoders without their original files (encoders/<m>/)."""
        for m, enc in model.encoders.items():
            if hasattr(enc, "save_architecture"):
                enc.save_architecture(self.encoder_dir(m))

    def save_params(self, model) -> dict:
        from mmfit.models.finetune import count_parameters, trainable_summary

        n_params, n_train = count_parameters(model)
        out = {"params": n_params, "trainable": n_train, **trainable_summary(model)}
        self.write_json(PARAMS, out)
        return out

    def save_weights(self, weights, metadata: dict | None = None, name: str = WEIGHTS) -> None:
        """A model, or its (full) state dict, or plain tensors (int8, half) -> model.safetensors."""
        state = weights if isinstance(weights, dict) else model_state(weights)
        atomic_save(state, self.path / name, {"format": "pt", **(metadata or {})})

    def save_adapters(self, model) -> list[str]:
        """Each adapted encoder's adapter in peft's format: adapters/<m>/adapter_model.safetensors +
        adapter_config.json."""
        from mmfit.models.finetune import adapter_states

        states = adapter_states(model)
        for m, (tensors, conf) in states.items():
            atomic_save(tensors, self.path / ADAPTERS / m / "adapter_model.safetensors", {"format": "pt"})
            self.write_json(f"{ADAPTERS}/{m}/adapter_config.json", conf)
        return list(states)

    def write_skipped(self, errors) -> None:
        """skipped.csv (one line per bad value, with whether its row was skipped or kept with the
        modality absent) and skipped.json (rows skipped, cells made absent, reasons)."""
        self.write_text(SKIPPED, errors.csv())
        self.write_json(SKIPPED_SUMMARY, {"rows": len(errors.bad_rows()), "reasons": len(errors.errors),
                                          "cells_absent": errors.cells_absent()})

    def write_evaluation(self, split: str, result: dict) -> Path:
        return self.write_json(f"{EVAL}/{split}.json", result)

    def append_metrics(self, record: dict) -> None:
        with open(self.path / METRICS, "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def write_arrays(self, name: str, arrays: dict[str, np.ndarray]) -> Path:
        """An .npz of named arrays, written atomically."""
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        atomic_write(self.path / name, buf.getvalue())
        return self.path / name

    def read_arrays(self, name: str) -> dict[str, np.ndarray]:
        with np.load(self.path / name) as z:
            return {k: z[k] for k in z.files}

    def keep_metrics_before(self, epoch: int) -> None:
        """Drop metrics.jsonl lines of epochs the checkpoint does not cover (they will be run again)."""
        keep = [r for r in self.history() if r["epoch"] < epoch]
        if self.has(METRICS):
            self.write_text(METRICS, "".join(json.dumps(r) + "\n" for r in keep))

    # ------------------------------------------------------------------ reading
    def read_json(self, name: str) -> Optional[dict]:
        f = self.path / name
        return json.loads(f.read_text()) if f.exists() else None

    def info(self) -> dict:
        return self.read_json(INFO) or {}

    def config(self) -> Config:
        """The run's config, with its data paths found again if the run or its data moved."""
        if not self.has(CONFIG):
            raise FileNotFoundError(f"{self.path} is not a run directory (no {CONFIG})")
        cfg = load_config(self.path / CONFIG, need_targets=False)  # a pretraining run has none
        recorded = self.info().get("paths", {})
        for key in ("data.manifest", "data.root"):
            value = _get(cfg, key)
            if value:
                _set(cfg, key, str(self._find(value, recorded.get(key, {}))))
        return cfg

    def _find(self, value: str, record: dict) -> Path:
        """Where a recorded path is now: as recorded; relative to the run as it was then (the run and
        its data moved together); a run from before paths were resolved: relative to the working
        directory or to a folder above the run; beside the run (the run moved next to its data)."""
        here = self.path.resolve()
        p = Path(value)
        candidates = [p] + ([here / record["from_run"]] if "from_run" in record else [])
        if not p.is_absolute():
            candidates += [d / p for d in here.parents]
        candidates.append(here.parent / p.name)
        return next((c.resolve() for c in candidates if c.exists()), p)

    def preprocessor(self, cfg: Config) -> Preprocessor:
        return Preprocessor.load(cfg, self.read_json(LABELS), self.path)

    def history(self) -> list[dict]:
        f = self.path / METRICS
        return [json.loads(x) for x in f.read_text().splitlines() if x.strip()] if f.exists() else []

    def evaluation(self, split: str) -> Optional[dict]:
        f = self.eval_path(split)
        return json.loads(f.read_text()) if f.exists() else None

    def record(self) -> dict:
        """compression.json: the steps that made this run from its source ({"steps": []} for none)."""
        return self.read_json(COMPRESSION) or {"steps": []}

    def cpu_only(self) -> bool:
        """Whether the weights run on the CPU alone (PyTorch's dynamic int8 layers)."""
        return any(s.get("method") == "dynamic-int8" for s in self.record()["steps"])

    def precision(self) -> str:
        """The precision a run's weights run in (bf16 after quantize --method bf16)."""
        return next((s["precision"] for s in reversed(self.record()["steps"]) if "precision" in s), "fp32")

    def weights(self) -> dict[str, torch.Tensor]:
        """model.safetensors' tensors, with the frozen ones an ensemble's members share (its metadata
        'frozen': a file beside the members, relative to this run)."""
        from safetensors import safe_open

        path = self.path / WEIGHTS
        with safe_open(str(path), framework="pt") as f:
            shared = (f.metadata() or {}).get("frozen")
        state = load_file(str(path))
        if shared:
            state.update(load_file(str(self.path / shared)))
        return state

    def save_shared_weights(self, trained: dict, frozen: dict, store: Path, metadata: dict | None = None) -> Path:
        """model.safetensors without the `frozen` tensors, which go to `store` under their content's
        hash, once for every run that holds the same ones (an ensemble's members: the same frozen
        MiniLM and EfficientNet, about 100 MB, in each of five or more) -> the shared file."""
        shared = Path(store) / f"frozen-{tensors_digest(frozen)}.safetensors"
        if not shared.exists():
            atomic_save(frozen, shared, {"format": "pt"})
        self.save_weights(trained, {**(metadata or {}), "frozen": os.path.relpath(shared, self.path)})
        return shared

    def encoder_state(self, modality: str) -> dict[str, torch.Tensor]:
        """One modality's encoder weights, named as the plain encoder names them (what
        `model.encoders.<m>.init: RUN` loads)."""
        if not self.has(WEIGHTS):
            raise FileNotFoundError(f"{self.path} has no {WEIGHTS}: not a finished run (model.encoders.*.init)")
        prefix = f"encoders.{modality}."
        state = self.weights()
        out = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if not out:
            have = sorted({k.split(".")[1] for k in state if k.startswith("encoders.")})
            raise ValueError(f"model.encoders.{modality}.init: {self.path} has no encoder for '{modality}' "
                             f"(it has: {', '.join(have) or 'none'})")
        return out

    def architectures(self, cfg: Config) -> dict[str, Path]:
        return {m: self.encoder_dir(m) for m in cfg.data.columns if self.encoder_dir(m).exists()}

    def load_model(self, cfg: Config, pre: Preprocessor):
        """The run's model: built from its config and saved architectures, then its weights (pruned
        layers are resized and int8 / half tensors swapped in, both read from the tensors); for an
        ensemble, its members' models, reading the same inputs, under their weights."""
        if self.has(ENSEMBLE):
            return self._load_ensemble(pre)
        from mmfit.models.model import build_model
        from mmfit.models.quantized import load_state
        from mmfit.models.surgery import conform_to_state

        model = build_model(cfg, pre, architectures=self.architectures(cfg))
        state = self.weights()
        try:
            conform_to_state(model, state)
            load_state(model, state)
        except RuntimeError as e:  # weights of another model (config.yaml edited, files mixed up)
            raise ValueError(f"{self.path / WEIGHTS} does not fit the model its config builds: {e}") from None
        return model

    def ensemble(self) -> Optional[dict]:
        return self.read_json(ENSEMBLE)

    def _load_ensemble(self, pre: Preprocessor):
        from mmfit.models.ensemble import EnsembleModel

        spec = self.ensemble()
        members = {}
        used = {w["member"] for ws in spec["weights"].values() for w in ws if w["weight"] > 0}
        for name, rel in spec["members"].items():
            if name not in used:  # a member without weight is not built (nor its encoders loaded)
                continue
            member = Run(self.path / rel)
            members[name] = member.load_model(member.config(), pre)
        weights = {t: {(w["member"], w["head"]): w["weight"] for w in ws} for t, ws in spec["weights"].items()}
        temps = {t: {(w["member"], w["head"]): w.get("temperature", 1.0) for w in ws} for t, ws in spec["weights"].items()}
        return EnsembleModel(members, weights, spec["kinds"], spec["primary"], temps)

    def load(self, device: str = "cpu") -> "LoadedRun":
        self.require(ENSEMBLE if self.has(ENSEMBLE) else WEIGHTS)
        cfg = self.config()
        pre = self.preprocessor(cfg)
        model = self.load_model(cfg, pre).to(device).eval()
        return LoadedRun(self, cfg, pre, model, self.precision(), device)

    # ------------------------------------------------------------------ deriving
    def derive(self, out: Optional[PathLike], suffix: str) -> "Run":
        """A new run directory beside this one (RUN-<suffix>, or `out`) holding what CARRIED names."""
        out = Path(out) if out else self.path.with_name(f"{self.name}-{suffix}")
        if out.exists():
            raise FileExistsError(f"{out} already exists; choose another --output")
        out.mkdir(parents=True)
        new = Run(out)
        new.copy_from(self, CARRIED)
        new.write_json(INFO, {**self.info(), "derived_from": str(self.path.resolve()),
                              "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
        return new

    def copy_from(self, source: "Run", patterns=PREPROCESSING) -> None:
        """Files of another run (by default what reads the data the way it does) into this one."""
        for pattern in patterns:
            for src in source.path.glob(pattern):
                (shutil.copytree if src.is_dir() else shutil.copy2)(src, self.path / src.name)

    def add_step(self, source: "Run", step: dict, inherit: bool = True) -> dict:
        """compression.json: the source's steps (if it was derived itself; `inherit`) plus this one."""
        record = {"source": str(source.path), "steps": (source.record()["steps"] if inherit else []) + [step]}
        self.write_json(COMPRESSION, record)
        return record


def encoder_inits(cfg: Config) -> dict[str, Run]:
    """The runs the encoders start from (`model.encoders.<m>.init`), per modality."""
    out = {}
    for m in modality_kinds(cfg):
        init = encoder_config(cfg, m).init
        if init:
            if not Run(init).has(CONFIG):
                raise FileNotFoundError(f"model.encoders.{m}.init: {init} is not a run directory (no {CONFIG})")
            out[m] = Run(init)
    return out


def init_texts(inits: dict[str, Run]) -> dict:
    """The fitted text processors of the runs text encoders start from: the same token ids."""
    out = {}
    for m, r in inits.items():
        cfg = r.config()
        if m in cfg.data.columns and cfg.data.columns[m].role == "text":
            out[m] = r.preprocessor(cfg).texts[m]
    return out


@dataclass
class LoadedRun:
    """A run read back: its config, fitted preprocessing and model (any backend)."""

    run: Run
    cfg: Config
    pre: Preprocessor
    model: Any
    precision: str = "fp32"
    device: str = "cpu"

    @property
    def run_dir(self) -> Path:
        return self.run.path

    def data(self, df=None) -> dict[str, TensorData]:
        """The run's own splits (train / val / test), read with its fitted preprocessing from its
        manifest (or `df`, for a run trained from a DataFrame)."""
        if df is None and not (self.cfg.data.manifest and Path(self.cfg.data.manifest).exists()):
            raise FileNotFoundError(f"the data of {self.run} is not reachable: data.manifest is "
                                    f"{self.cfg.data.manifest!r} (a run trained from a DataFrame: evaluate it on "
                                    "data you pass, `mmfit evaluate RUN --data FILE` or data=df in Python)")
        return prepare_training(self.cfg, df, log=lambda *a: None, fitted=self.pre)[1]

    def predict_tensors(self, data: TensorData, batch_size: int = 64, drop=()) -> dict:
        """Outputs per task in original units (see evaluation.predict.predict_data); `drop`: modalities
        to treat as absent."""
        return predict_data(self.model, data, self.pre, batch_size, self.device, drop=drop, precision=self.precision)

    def embed_tensors(self, data: TensorData, batch_size: int = 64, modality: Optional[str] = None) -> np.ndarray:
        """Each row's fused representation (or one modality's embedding); see evaluation.predict.embed_data."""
        if not hasattr(self.model, "encoders"):
            raise ValueError(f"{self.run}: embeddings come from the PyTorch model; load it with backend='torch'")
        return embed_data(self.model, data, batch_size, self.device, self.precision, modality)

    def evaluate_tensors(self, data: TensorData, ablation: bool = True) -> dict:
        return evaluate_data(self.model, data, self.pre, 64, self.device, ablation=ablation,
                             precision=self.precision)

    def split_metrics(self, split: str = "test") -> Optional[dict]:
        """Metrics on one of its own splits; None when the data is not reachable or the split empty."""
        try:
            data = self.data()[split]
        except FileNotFoundError:
            return None
        return self.evaluate_tensors(data, ablation=False)["metrics"] if len(data) else None

    def sample_batch(self, source: Optional[PathLike] = None, n: int = 64) -> tuple[Batch, str]:
        """Real rows of `source` or of the run's manifest, to compare models on; random inputs of the
        right shapes when there are none."""
        source = source or self.cfg.data.manifest
        if source and Path(source).exists():
            df = read_manifest(Path(source)).head(n)
            root = Path(self.cfg.data.root) if self.cfg.data.root else Path(source).resolve().parent
            tensors, _ = self.pre.transform(df, root, on_error="skip", log=lambda *_: None)
            if len(tensors):
                return tensors.batch(torch.arange(len(tensors))), f"{len(tensors)} rows of {source}"
        return random_batch(self.pre, n), f"{n} random inputs (no data found to check on)"


def random_batch(pre: Preprocessor, n: int, seed: int = 0) -> Batch:
    """Inputs of the right shapes and ranges (token ids below the vocabulary size), every modality present."""
    gen = torch.Generator().manual_seed(seed)
    inputs = {}
    for m, tensors in pre.input_spec().items():
        inputs[m] = {}
        for k, (shape, dt) in tensors.items():
            if dt == torch.bool:
                inputs[m][k] = torch.ones((n, *shape), dtype=torch.bool)
            elif dt == torch.int64:
                high = max(5, pre.texts[m].vocab_size) if k == "input_ids" else 1
                inputs[m][k] = torch.randint(0, high, (n, *shape), generator=gen)
            else:
                inputs[m][k] = torch.rand((n, *shape), generator=gen)
    return Batch(inputs, {m: torch.ones(n, dtype=torch.bool) for m in inputs})


def load_model(run: PathLike, device: str = "cpu"):
    """The model of a run directory, ready to predict (see Run.load for its config and preprocessing)."""
    return Run(run).load(device).model
