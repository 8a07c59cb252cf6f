"""A run's training checkpoints in safetensors, written atomically (run/files.py atomic_save); the
run store (run/store.py Run: keeper, load_checkpoint, checkpoint_weights) is how training reaches them.

A training checkpoint is one file: model and optimizer tensors, RNG state, and the trainer
state as JSON in the safetensors metadata, so a kill at any moment leaves either the old
complete file or the new complete file, never half of one. Nothing is pickled.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from safetensors.torch import load_file, safe_open

from mmfit.run.files import atomic_save, model_state
from mmfit.run.layout import BEST, CHECKPOINT, FROZEN, WEIGHTS

FORMAT = "mmfit-checkpoint-1"


def load_weights(model: torch.nn.Module, run) -> None:
    """A run's weights back into its model (no resizing, no int8: the run's loader does those)."""
    missing, unexpected = model.load_state_dict(run.weights(), strict=False)
    if missing or unexpected:
        raise RuntimeError(f"{run / WEIGHTS}: weights do not match the model (missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]})")


class Keeper:
    """What a training run writes as it goes, the frozen tensors (frozen encoders, a LoRA's base
    weights: `frozen`, by name) no more than once: they go to checkpoints/frozen.safetensors on the
    run's first epoch; each epoch's resume state (checkpoints/last) and the best weights so far
    (checkpoints/best) hold the rest. model.safetensors, the whole model under the kept weights, is
    written once, at the end (`publish`). A run that will not be resumed (an ensemble's member) keeps
    its best weights in memory and writes nothing before then. With pretrained encoders frozen, an
    epoch used to write them twice (about 200 MB for MiniLM + EfficientNet-Lite0). With `shared` (a
    folder), model.safetensors leaves them out too: they go there once for every run holding the
    same ones (Run.save_shared_weights: an ensemble's members)."""

    def __init__(self, run, frozen: set[str], resumable: bool = True, resuming: bool = False,
                 shared: Optional[Path] = None):
        self.run, self.frozen, self.resumable, self.shared = run, frozen, resumable, shared
        # a resumed run's frozen tensors are on disk (a checkpoint from before this file: in `last`)
        self.frozen_written = resuming and run.has(FROZEN)
        self.best: tuple[dict, dict] | None = None  # (trained tensors, metadata), not resumable
        self.held: dict = {}  # the frozen tensors, not resumable

    def epoch(self, weights: dict, opt_state: dict, trainer_state: dict, better: bool, epoch: int) -> None:
        """`weights`: the full state dict of this epoch (rank 0)."""
        trained = {k: v for k, v in weights.items() if k not in self.frozen}
        frozen = {k: v for k, v in weights.items() if k in self.frozen}
        meta = {"epoch": str(epoch)}
        if not self.resumable:
            self.held = self.held or frozen
            if better:
                self.best = (trained, meta)
            return
        if frozen and not self.frozen_written:  # before `last` names it: a resume always finds it
            atomic_save(frozen, self.run / FROZEN, {"format": "pt"})
            self.frozen_written = True
        if better:
            atomic_save(trained, self.run / BEST, {"format": "pt", **meta})
        save_training(self.run / CHECKPOINT, trained, opt_state, trainer_state,
                      frozen=Path(FROZEN).name if self.frozen_written else None)

    def publish(self) -> bool:
        """model.safetensors from the frozen tensors and the best trained ones; False where no epoch
        kept any (a run that wrote model.safetensors itself, or stopped before its first epoch)."""
        if self.best is not None:
            (trained, meta), frozen = self.best, self.held
        elif self.run.has(BEST):
            with safe_open(str(self.run / BEST), framework="pt") as f:
                meta = {k: v for k, v in (f.metadata() or {}).items() if k != "format"}
                trained = {k: f.get_tensor(k) for k in f.keys()}
            frozen = load_file(str(self.run / FROZEN)) if self.run.has(FROZEN) else {}
        else:
            return False
        if self.shared is not None and frozen:
            self.run.save_shared_weights(trained, frozen, self.shared, meta)
        else:
            self.run.save_weights({**frozen, **trained}, meta)
        return True


def save_training(path: Path, model, optimizer, trainer_state: dict, frozen: str | None = None) -> None:
    """`model` / `optimizer`: the objects, or their full state dicts (gathered from FSDP shards);
    `frozen`: the file beside `path` holding the model tensors left out of it (Keeper)."""
    model_sd = model if isinstance(model, dict) else model_state(model)
    tensors = {f"model.{k}": v for k, v in model_sd.items()}
    opt = optimizer if isinstance(optimizer, dict) else optimizer.state_dict()
    for pid, st in opt["state"].items():
        for name, val in st.items():
            t = val if torch.is_tensor(val) else torch.tensor(val)
            tensors[f"optim.{pid}.{name}"] = t
    tensors["rng.torch"] = torch.get_rng_state()
    groups = [{k: v for k, v in g.items()} for g in opt["param_groups"]]
    meta = {
        "format": FORMAT,
        "trainer_state": json.dumps(trainer_state),
        "param_groups": json.dumps(groups),
        "rng_numpy": json.dumps(_np_state()),
        "rng_python": json.dumps(_py_state()),
    }
    if frozen:
        meta["frozen"] = frozen
    atomic_save(tensors, path, meta)


def checkpoint_model_state(path: Path) -> dict[str, torch.Tensor]:
    """A training checkpoint's model tensors, the frozen ones kept beside it included."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        out = {k[6:]: f.get_tensor(k) for k in f.keys() if k.startswith("model.")}
    return {**out, **_frozen(path, meta)}


def _frozen(path: Path, meta: dict) -> dict[str, torch.Tensor]:
    """The frozen tensors a checkpoint names (metadata 'frozen'), read from beside it."""
    return load_file(str(Path(path).parent / meta["frozen"])) if meta.get("frozen") else {}


def load_training(path: Path, model, optimizer, load=None) -> dict:
    """Restore model, optimiser and RNG states; `load(model, optimizer, model_sd, optim_sd)`
    replaces the plain load_state_dict calls (FSDP: Dist.load_state)."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not an mmfit training checkpoint")
    model_sd = {**{k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, **_frozen(path, meta)}
    state: dict = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    optim_sd = {"state": state, "param_groups": json.loads(meta["param_groups"])}
    _check_fits(path, optimizer, optim_sd)
    if load is None:
        model.load_state_dict(model_sd)
        optimizer.load_state_dict(optim_sd)
    else:
        load(model, optimizer, model_sd, optim_sd)
    torch.set_rng_state(tensors["rng.torch"])
    _set_np_state(json.loads(meta["rng_numpy"]))
    random.setstate(_py_from_json(json.loads(meta["rng_python"])))
    return json.loads(meta["trainer_state"])


def _check_fits(path: Path, optimizer, optim_sd: dict) -> None:
    """The optimiser state is kept by parameter position: a model built in another order (columns
    reordered in config.yaml, another model setting) would take someone else's moments."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for i, st in optim_sd["state"].items():
        moment = st.get("exp_avg")
        if moment is not None and (i >= len(params) or tuple(moment.shape) != tuple(params[i].shape)):
            raise ValueError(f"{path}: the optimiser state does not fit the model built from the run's config "
                             "(was config.yaml changed: columns reordered, encoders or widths?); restore it, "
                             "or start a new run")


def _np_state():
    s = np.random.get_state()
    return [s[0], s[1].tolist(), int(s[2]), int(s[3]), float(s[4])]


def _set_np_state(s):
    np.random.set_state((s[0], np.array(s[1], dtype=np.uint32), s[2], s[3], s[4]))


def _py_state():
    v, internal, gauss = random.getstate()
    return [v, list(internal), gauss]


def _py_from_json(s):
    return (s[0], tuple(s[1]), s[2])
