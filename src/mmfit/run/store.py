"""The run store: every folder mmfit writes (a training run, an ensemble, a study), what each is
named and what each of its files is called, writing them (atomically: run/files.py), reading them,
and a run's training checkpoints (run/checkpoints.py). Nothing here builds or runs a model: loading a
run for use is run/loaded.py.

A run stands alone: its config holds absolute paths (`run.json` keeps what they were given as), and
a run folder moved together with its data, or next to its manifest, still finds it.
What each folder and file is called: run/layout.py.
"""

from __future__ import annotations

import copy
import io
import json
import os
import shutil
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from safetensors.torch import load_file

from mmfit.config import Config, encoder_config, load_config, modality_kinds
from mmfit.data.prepare import Preprocessor
from mmfit.run.checkpoints import Keeper, checkpoint_model_state, load_training
from mmfit.run.files import atomic_save, atomic_write, model_state, tensors_digest
from mmfit.run.layout import (ADAPTERS, CARRIED, CHECKPOINT, COMPRESSION, CONFIG, ENCODERS, ENSEMBLE, EVAL,
                               FOLDERS, INFO, LABELS, MANIFEST, METRICS, PARAMS, PATH_KEYS, PREPROCESSING,
                               SKIPPED, SKIPPED_SUMMARY, STUDY_DB, TRIALS, WEIGHTS)
from mmfit.version import __version__

PathLike = Union[str, Path]

# ---------------------------------------------------------------------------- folders


def new_folder(output_dir: PathLike, what: str, name: Optional[str] = None) -> Path:
    """Where a new folder goes (not created): OUTPUT/<name>, else OUTPUT/<prefix>-<date>-<time> for
    what makes it (train: run-, fit: fit-, tune: tune-), with -2, -3 ... while that one exists."""
    base = Path(output_dir) / (name or datetime.now().strftime(f"{FOLDERS[what]}-%Y%m%d-%H%M%S"))
    path, k = base, 1
    while path.exists():
        k += 1
        path = Path(f"{base}-{k}")
    return path


def new_run_dir(cfg: Config) -> Path:
    """Where a new training run goes: train.output_dir / (train.run_name or run-<date>-<time>)."""
    return new_folder(cfg.train.output_dir, "train", cfg.train.run_name)


class Folder:
    """A folder the store writes: `folder / NAME` is the path of one of its files."""

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

    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

    def write_text(self, name: str, text: Union[str, bytes]) -> Path:
        atomic_write(self.path / name, text)
        return self.path / name

    def write_json(self, name: str, obj: Any) -> Path:
        return self.write_text(name, json.dumps(obj, indent=2, default=str))

    def read_json(self, name: str) -> Optional[dict]:
        f = self.path / name
        return json.loads(f.read_text()) if f.exists() else None


# ---------------------------------------------------------------------------- paths
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


class Run(Folder):
    """A run directory. `run / NAME` is the path of one of its files (their names: run/layout.py)."""

    def require(self, *names: str, hint: str = "") -> None:
        for f in (CONFIG, LABELS, *names):
            if not self.has(f):
                raise FileNotFoundError(f"{self.path} is not a complete run directory: {f} is missing{hint}")

    def eval_path(self, split: str) -> Path:
        return self.path / EVAL / f"{split}.json"

    def encoder_dir(self, modality: str) -> Path:
        return self.path / ENCODERS / modality

    # ------------------------------------------------------------------ writing
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

    def save_params(self, summary: dict) -> None:
        """params.json: parameters per encoder and strategy (models/finetune.py parameter_summary)."""
        self.write_json(PARAMS, summary)

    def save_weights(self, weights, metadata: dict | None = None, name: str = WEIGHTS) -> None:
        """A model, or its (full) state dict, or plain tensors (int8, half) -> model.safetensors."""
        state = weights if isinstance(weights, dict) else model_state(weights)
        atomic_save(state, self.path / name, {"format": "pt", **(metadata or {})})

    def save_adapters(self, states: dict) -> list[str]:
        """Each adapted encoder's adapter (models/finetune.py adapter_states: {m: (tensors, config)}) in
        peft's format: adapters/<m>/adapter_model.safetensors + adapter_config.json."""
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
        return self.write_text(name, buf.getvalue())

    def read_arrays(self, name: str) -> dict[str, np.ndarray]:
        with np.load(self.path / name) as z:
            return {k: z[k] for k in z.files}

    def keep_metrics_before(self, epoch: int) -> None:
        """Drop metrics.jsonl lines of epochs the checkpoint does not cover (they will be run again)."""
        keep = [r for r in self.history() if r["epoch"] < epoch]
        if self.has(METRICS):
            self.write_text(METRICS, "".join(json.dumps(r) + "\n" for r in keep))

    def write_manifest(self, df) -> Path:
        """manifest.csv: the table a run trained from a DataFrame keeps, so that it can be read again."""
        return self.write_text(MANIFEST, df.to_csv(index=False))

    # ------------------------------------------------------------------ training checkpoints
    def keeper(self, frozen: set[str], resumable: bool = True, resuming: bool = False,
               shared: Optional[Path] = None) -> Keeper:
        """What writes this run's checkpoints and, at the end, its weights, as training goes
        (run/checkpoints.py Keeper)."""
        return Keeper(self, frozen, resumable, resuming, shared)

    def has_checkpoint(self) -> bool:
        return self.has(CHECKPOINT)

    def load_checkpoint(self, model, optimizer, load=None) -> dict:
        """The last checkpoint into `model` and `optimizer` (and the RNGs) -> the trainer's state."""
        return load_training(self / CHECKPOINT, model, optimizer, load)

    def checkpoint_weights(self) -> dict[str, torch.Tensor]:
        """The last checkpoint's model tensors, the frozen ones included (to shape a model before resuming)."""
        return checkpoint_model_state(self / CHECKPOINT)

    # ------------------------------------------------------------------ reading
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
        """metrics.jsonl's records, a line an epoch. A last line cut short (the process killed while
        appending it) is left out: the epoch it records is run again on resume (keep_metrics_before)."""
        f = self.path / METRICS
        lines = [x for x in f.read_text().splitlines() if x.strip()] if f.exists() else []
        out = []
        for i, x in enumerate(lines):
            try:
                out.append(json.loads(x))
            except json.JSONDecodeError:
                if i < len(lines) - 1:  # a broken line before others: not a torn append
                    raise ValueError(f"{f}: line {i + 1} is not JSON") from None
        return out

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

    def ensemble(self) -> Optional[dict]:
        return self.read_json(ENSEMBLE)

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


# ---------------------------------------------------------------------------- studies



class Study(Folder):
    """A tune folder (`mmfit tune`): the search, the Optuna study's SQLite file (unless the workers
    share another storage), each trial's run, and what the study ends with; every file written
    atomically, so workers and readers never see half of one."""

    def storage(self) -> str:
        return f"sqlite:///{(self.path / STUDY_DB).resolve()}"

    def trial_dir(self, number: int) -> Path:
        return self.path / TRIALS / f"trial-{number:04d}"

    def write_figure(self, name: str, fig, dpi: int = 110) -> Path:
        """A matplotlib figure as PNG."""
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi)
        return self.write_text(name, buf.getvalue())
