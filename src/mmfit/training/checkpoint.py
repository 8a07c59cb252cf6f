"""Training checkpoints in safetensors, written atomically (mmfit.run.atomic_save).

A training checkpoint is one file: model and optimizer tensors, RNG state, and the trainer
state as JSON in the safetensors metadata, so a kill at any moment leaves either the old
complete file or the new complete file, never half of one. Nothing is pickled.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, safe_open

from mmfit.run import atomic_save, model_state

FORMAT = "mmfit-checkpoint-1"


def load_weights(model: torch.nn.Module, path: Path) -> None:
    """A model's own weights back into it (no resizing, no int8: the run's loader does those)."""
    state = load_file(str(path))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"{path}: weights do not match the model (missing {missing[:5]}, unexpected {unexpected[:5]})")


def save_training(path: Path, model, optimizer, trainer_state: dict) -> None:
    """`model` / `optimizer`: the objects, or their full state dicts (gathered from FSDP shards)."""
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
    atomic_save(tensors, path, meta)


def load_training(path: Path, model, optimizer, load=None) -> dict:
    """Restore model, optimiser and RNG states; `load(model, optimizer, model_sd, optim_sd)`
    replaces the plain load_state_dict calls (FSDP: Dist.load_state)."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not an mmfit training checkpoint")
    model_sd = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
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
