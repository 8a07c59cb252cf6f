"""Loading a run for use: building its model from its config, saved architectures and weights (an
ensemble: its members'), and `LoadedRun`, the run with its config, fitted preprocessing and model,
which predicts, embeds and evaluates on the run's own splits or on new data. Storing a run is
run/store.py; this module only reads through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from mmfit.config import Config
from mmfit.data.batch import Batch, TensorData
from mmfit.data.manifest import read_manifest
from mmfit.data.prepare import Preprocessor, prepare_training
from mmfit.evaluation.predict import embed_data, evaluate_data, predict_data
from mmfit.run.layout import ENSEMBLE, WEIGHTS
from mmfit.run.store import PathLike, Run


def build_run_model(run: Run, cfg: Config, pre: Preprocessor):
    """The run's model: built from its config and saved architectures, then its weights (pruned
    layers are resized and int8 / half tensors swapped in, both read from the tensors); for an
    ensemble, its members' models, reading the same inputs, under their weights."""
    if run.has(ENSEMBLE):
        return _ensemble(run, pre)
    from mmfit.models.model import build_model
    from mmfit.models.quantized import load_state
    from mmfit.models.surgery import conform_to_state

    model = build_model(cfg, pre, architectures=run.architectures(cfg))
    state = run.weights()
    try:
        conform_to_state(model, state)
        load_state(model, state)
    except RuntimeError as e:  # weights of another model (config.yaml edited, files mixed up)
        raise ValueError(f"{run / WEIGHTS} does not fit the model its config builds: {e}") from None
    return model


def _ensemble(run: Run, pre: Preprocessor):
    from mmfit.models.ensemble import EnsembleModel

    spec = run.ensemble()
    members = {}
    used = {w["member"] for ws in spec["weights"].values() for w in ws if w["weight"] > 0}
    for name, rel in spec["members"].items():
        if name not in used:  # a member without weight is not built (nor its encoders loaded)
            continue
        member = Run(run / rel)
        members[name] = build_run_model(member, member.config(), pre)
    weights = {t: {(w["member"], w["head"]): w["weight"] for w in ws} for t, ws in spec["weights"].items()}
    temps = {t: {(w["member"], w["head"]): w.get("temperature", 1.0) for w in ws} for t, ws in spec["weights"].items()}
    return EnsembleModel(members, weights, spec["kinds"], spec["primary"], temps)


def load_run(run: PathLike, device: str = "cpu") -> "LoadedRun":
    """A run read back for use: its config, fitted preprocessing and model, on `device`."""
    run = run if isinstance(run, Run) else Run(run)
    run.require(ENSEMBLE if run.has(ENSEMBLE) else WEIGHTS)
    cfg = run.config()
    pre = run.preprocessor(cfg)
    model = build_run_model(run, cfg, pre).to(device).eval()
    return LoadedRun(run, cfg, pre, model, run.precision(), device)


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

    def embed_tensors(self, data: TensorData, batch_size: int = 64, modality=None):
        """Each row's fused representation (or one modality's embedding, or {modality: embeddings} for a
        list of them); see evaluation.predict.embed_data."""
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
    """The model of a run directory, ready to predict (see load_run for its config and preprocessing)."""
    return load_run(run, device).model
