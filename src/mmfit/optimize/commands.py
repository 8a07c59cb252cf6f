"""`mmfit prune / quantize / distill`: each turns a run into a new run directory and records
what it did and measured in that run's `compression.json` (parameters, non-zero weights, size
on disk, largest logit difference to the source on real rows, test metrics before and after)."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Callable, Optional, Union

from mmfit.config import load_config
from mmfit.optimize import derive
from mmfit.optimize.prune import count_nonzero, magnitude_prune, structured_prune
from mmfit.optimize.quantize import count_weights, half_state, int8_state, onnx_int8, quantize_dynamic_int8
from mmfit.training.checkpoint import atomic_save, save_weights

PathLike = Union[str, Path]
QUANT_METHODS = ("dynamic-int8", "onnx-int8", "fp16", "bf16")


def _source(run: PathLike):
    from mmfit.deploy.predictor import Predictor

    run = Path(run)
    pred = Predictor.load(run)
    for s in derive.read_record(run)["steps"]:
        if s["method"] in QUANT_METHODS:
            raise ValueError(f"{run} is already quantized ({s['method']}); prune, quantize or export its source")
    return run, pred


def _run_metrics(run: Path, pred) -> Optional[dict]:
    """Test metrics a run's training already wrote (eval/test.json), else measured now."""
    f = run / "eval" / "test.json"
    return json.loads(f.read_text())["metrics"] if f.exists() else derive.test_metrics(pred)


def _measure(pred, ref: dict, batch, size_file: Path, metrics_before: Optional[dict]) -> dict:
    """Loaded-back run vs the source: parameters, non-zeros, size, logit difference, test metrics."""
    after = _run_metrics(pred.run_dir, pred)  # recovery training has evaluated its best weights already
    model = pred.model
    out = {"size_mb": derive.megabytes(size_file),
           "max_abs_diff_logits": derive.max_diff(ref, derive.logits(model, batch, pred.precision)),
           "test_metrics": after, "test_score_before": derive.primary_score(metrics_before),
           "test_score": derive.primary_score(after)}
    if hasattr(model, "parameters"):  # an ONNX graph has no parameters to count
        out["params"], out["nonzero"] = count_weights(model)
    return out


def prune_run(run: PathLike, sparsity: float, method: str = "structured", finetune_epochs: int = 0,
              output: Optional[PathLike] = None, console=None, log: Callable = print, df=None) -> dict:
    """Prune a run (magnitude: global smallest weights zeroed; structured: units removed), then
    optionally fine-tune to recover (pruned weights stay zero, removed units stay removed)."""
    from mmfit.deploy.predictor import Predictor
    from mmfit.training.loop import train as fit

    if method not in ("magnitude", "structured"):
        raise ValueError(f"--method must be magnitude or structured, not {method!r}")
    if not 0 < sparsity < 1:
        raise ValueError(f"--sparsity must be between 0 and 1 (a share of weights / units), got {sparsity}")
    run, pred = _source(run)
    if finetune_epochs and df is None and not (pred.cfg.data.manifest and Path(pred.cfg.data.manifest).exists()):
        raise ValueError(f"--finetune-epochs needs the run's training data, but data.manifest in {run / 'config.yaml'} "
                         f"is {pred.cfg.data.manifest!r}; a run trained from a DataFrame can be pruned with "
                         f"mmfit.api.prune(run, ..., df=the_dataframe)")
    before = _run_metrics(run, pred)
    batch, probe = derive.sample_batch(pred)
    ref = derive.logits(pred.model, batch)
    params0, nonzero0 = sum(p.numel() for p in pred.model.parameters()), count_nonzero(pred.model)
    size0 = derive.megabytes(run / "model.safetensors")
    t0 = time.time()
    removed = magnitude_prune(pred.model, sparsity) if method == "magnitude" else structured_prune(pred.model, sparsity)
    out = derive.new_run(run, output, f"{method}{round(sparsity * 100)}")
    save_weights(pred.model, out / "model.safetensors", {"pruned_from": str(run)})
    step = {"method": method, "sparsity": sparsity, "removed": removed, "finetune_epochs": finetune_epochs,
            "params_before": params0, "nonzero_before": nonzero0, "size_mb_before": size0, "checked_on": probe}
    derive.write_record(run, out, step)  # the pruned run is complete (and loadable) from here on
    if finetune_epochs:
        cfg = copy.deepcopy(pred.cfg)
        cfg.train.epochs, cfg.train.patience = finetune_epochs, finetune_epochs + 1
        cfg.train.keep_sparsity = method == "magnitude"
        cfg.train.warmup_ratio = min(cfg.train.warmup_ratio, 0.05)
        (out / "checkpoints").mkdir(exist_ok=True)
        pruned_only = derive.test_metrics(Predictor.load(out))
        step["test_score_before_finetune"] = derive.primary_score(pruned_only)
        log(f"pruned; test score before recovery {step['test_score_before_finetune']}; fine-tuning {finetune_epochs} epoch(s)")
        fit(cfg, df=df, run_dir=out, init=out, console=console)
    step.update(_measure(Predictor.load(out), ref, batch, out / "model.safetensors", before))
    step["seconds"] = round(time.time() - t0, 1)
    return derive.write_record(run, out, step) | {"output": str(out)}


def quantize_run(run: PathLike, method: str, output: Optional[PathLike] = None) -> dict:
    from mmfit.deploy.export import export_onnx
    from mmfit.deploy.predictor import Predictor

    if method not in QUANT_METHODS:
        raise ValueError(f"--method must be one of {', '.join(QUANT_METHODS)}, not {method!r}")
    run, pred = _source(run)
    before = _run_metrics(run, pred)
    batch, probe = derive.sample_batch(pred)
    ref = derive.logits(pred.model, batch)
    step = {"method": method, "size_mb_before": derive.megabytes(run / "model.safetensors"), "checked_on": probe,
            "params_before": sum(p.numel() for p in pred.model.parameters())}
    t0 = time.time()
    out = derive.new_run(run, output, method)
    backend, weights = "torch", out / "model.safetensors"
    if method == "dynamic-int8":
        step["quantized"] = quantize_dynamic_int8(pred.model)
        atomic_save(int8_state(pred.model), weights, {"format": "pt", "quantized": method})
        in_memory = derive.logits(pred.model, batch)
    elif method in ("fp16", "bf16"):
        atomic_save(half_state(pred.model, method), weights, {"format": "pt", "quantized": method})
        if method == "bf16":
            step["precision"] = "bf16"
    else:
        backend, weights = "onnx", out / "model.onnx"
        fp32 = export_onnx(pred.model, pred.pre, pred.cfg, out / ".fp32.onnx")
        step["quantized"] = onnx_int8(fp32, weights)
        fp32.unlink()
    derive.write_record(run, out, step)
    loaded = Predictor.load(out, backend=backend)
    if method == "dynamic-int8":  # what was saved is what was quantized: reloading must be exact
        step["max_abs_diff_reload"] = derive.max_diff(in_memory, derive.logits(loaded.model, batch))
    step.update(_measure(loaded, ref, batch, weights, before), backend=backend, seconds=round(time.time() - t0, 1))
    return derive.write_record(run, out, step) | {"output": str(out)}


def distill_run(teacher: PathLike, student_config: PathLike, overrides: Optional[list[str]] = None,
                run_dir: Optional[PathLike] = None, df=None, console=None) -> dict:
    """Train the student config with the teacher's soft targets. The student's `data` section
    defaults to the teacher's (same manifest, columns, split), so rows and splits match."""
    import yaml

    from mmfit.deploy.predictor import Predictor
    from mmfit.training.loop import train as fit

    teacher = Path(teacher)
    tpred = Predictor.load(teacher)
    raw = yaml.safe_load(Path(student_config).read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{student_config}: expected a YAML mapping")
    raw.setdefault("data", tpred.cfg.to_dict()["data"])
    raw.setdefault("distill", {})["teacher"] = str(teacher)
    cfg = load_config(raw, overrides)
    out = fit(cfg, df=df, run_dir=Path(run_dir) if run_dir else None, console=console)
    spred = Predictor.load(out)
    t_weights, s_weights = teacher / "model.safetensors", out / "model.safetensors"
    t_metrics, s_metrics = _run_metrics(teacher, tpred), _run_metrics(out, spred)
    step = {"method": "distill", "teacher": str(teacher), "temperature": cfg.distill.temperature,
            "alpha": cfg.distill.alpha, "feature_weight": cfg.distill.feature_weight,
            "params_before": sum(p.numel() for p in tpred.model.parameters()),
            "params": sum(p.numel() for p in spred.model.parameters()),
            "size_mb_before": derive.megabytes(t_weights), "size_mb": derive.megabytes(s_weights),
            "test_score_before": derive.primary_score(t_metrics), "test_score": derive.primary_score(s_metrics),
            "test_metrics": s_metrics}
    record = {"source": str(teacher), "steps": [step]}
    (out / "compression.json").write_text(json.dumps(record, indent=2))
    return record | {"output": str(out)}
