"""`mmfit prune / quantize / distill / merge`: each turns a run into a new run directory (mmfit.run.store's
`Run.derive`) and records what it did and measured in that run's `compression.json` (parameters,
non-zero weights, size on disk, largest logit difference to the source on real rows, test metrics
before and after), or, for merge, `merge.json`."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Callable, Optional, Union

from mmfit.config import encoder_config, load_config, read_config_file
from mmfit.deploy.export import current_export, export_onnx
from mmfit.deploy.predictor import Predictor
from mmfit.evaluation.metrics import primary_score
from mmfit.evaluation.parity import logits, max_diff
from mmfit.models.finetune import has_adapters, merge_adapters, parameter_summary
from mmfit.optimize.prune import count_nonzero, magnitude_prune, structured_prune
from mmfit.optimize.quantize import count_weights, half_state, int8_state, onnx_int8, quantize_dynamic_int8
from mmfit.run.files import size_mb
from mmfit.run.layout import CONFIG, ENSEMBLE, MEMBERS, MERGE, ONNX, WEIGHTS
from mmfit.run.loaded import LoadedRun, load_run
from mmfit.run.store import Run
from mmfit.training.loop import train

PathLike = Union[str, Path]
QUANT_METHODS = ("dynamic-int8", "onnx-int8", "fp16", "bf16")


def _source(run: PathLike, method: str) -> LoadedRun:
    run = Run(run)
    if run.has(ENSEMBLE) and method != "onnx-int8":
        raise ValueError(f"{run} is an ensemble of the runs in {run / MEMBERS}: {method} works on one model; "
                         "compress a member, or quantize the whole ensemble with --method onnx-int8")
    for s in run.record()["steps"]:
        if s["method"] in QUANT_METHODS:
            raise ValueError(f"{run} is already quantized ({s['method']}); prune, quantize or export its source")
    return load_run(run)


def _run_metrics(loaded: LoadedRun) -> Optional[dict]:
    """Test metrics a run's training already wrote (eval/test.json), else measured now."""
    done = loaded.run.evaluation("test")
    return done["metrics"] if done else loaded.split_metrics("test")


def _measure(loaded: LoadedRun, ref: dict, batch, size_file: Path, metrics_before: Optional[dict]) -> dict:
    """Loaded-back run vs the source: parameters, non-zeros, size, logit difference, test metrics."""
    after = _run_metrics(loaded)  # recovery training has evaluated its best weights already
    out = {"size_mb": size_mb(size_file),
           "max_abs_diff_logits": max_diff(ref, logits(loaded.model, batch, loaded.precision)),
           "test_metrics": after, "test_score_before": primary_score(metrics_before), "test_score": primary_score(after)}
    if hasattr(loaded.model, "parameters"):  # an ONNX graph has no parameters to count
        out["params"], out["nonzero"] = count_weights(loaded.model)
    return out


def prune_run(run: PathLike, sparsity: float, method: str = "structured", finetune_epochs: int = 0,
              output: Optional[PathLike] = None, console=None, log: Callable = print, df=None) -> dict:
    """Prune a run (magnitude: global smallest weights zeroed; structured: units removed), then
    optionally fine-tune to recover (pruned weights stay zero, removed units stay removed)."""
    if method not in ("magnitude", "structured"):
        raise ValueError(f"--method must be magnitude or structured, not {method!r}")
    if not 0 < sparsity < 1:
        raise ValueError(f"--sparsity must be between 0 and 1 (a share of weights / units), got {sparsity}")
    src = _source(run, method)
    if finetune_epochs and df is None and not (src.cfg.data.manifest and Path(src.cfg.data.manifest).exists()):
        raise ValueError(f"--finetune-epochs needs the run's training data, but data.manifest of {src.run} "
                         f"is {src.cfg.data.manifest!r}; a run trained from a DataFrame can be pruned with "
                         f"mmfit.api.prune(run, ..., df=the_dataframe)")
    before = _run_metrics(src)
    batch, probe = src.sample_batch()
    ref = logits(src.model, batch)
    params0, nonzero0 = sum(p.numel() for p in src.model.parameters()), count_nonzero(src.model)
    size0 = size_mb(src.run / WEIGHTS)
    t0 = time.time()
    model = src.model
    removed = magnitude_prune(model, sparsity) if method == "magnitude" else structured_prune(model, sparsity)
    out = src.run.derive(output, f"{method}{round(sparsity * 100)}")
    out.save_weights(model, {"pruned_from": str(src.run)})
    out.save_params(parameter_summary(model))
    step = {"method": method, "sparsity": sparsity, "removed": removed, "finetune_epochs": finetune_epochs,
            "params_before": params0, "nonzero_before": nonzero0, "size_mb_before": size0, "checked_on": probe}
    out.add_step(src.run, step)  # the pruned run is complete (and loadable) from here on
    if finetune_epochs:
        cfg = copy.deepcopy(src.cfg)
        cfg.train.epochs, cfg.train.patience = finetune_epochs, finetune_epochs + 1
        cfg.train.keep_sparsity = method == "magnitude"
        cfg.train.warmup_ratio = min(cfg.train.warmup_ratio, 0.05)
        step["test_score_before_finetune"] = primary_score(load_run(out).split_metrics("test"))
        log(f"pruned; test score before recovery {step['test_score_before_finetune']}; fine-tuning {finetune_epochs} epoch(s)")
        train(cfg, df=df, run_dir=out.path, init=out.path, console=console)
    step.update(_measure(load_run(out), ref, batch, out / WEIGHTS, before))
    step["seconds"] = round(time.time() - t0, 1)
    return out.add_step(src.run, step) | {"output": str(out)}


def quantize_run(run: PathLike, method: str, output: Optional[PathLike] = None) -> dict:
    if method not in QUANT_METHODS:
        raise ValueError(f"--method must be one of {', '.join(QUANT_METHODS)}, not {method!r}")
    src = _source(run, method)
    before = _run_metrics(src)
    batch, probe = src.sample_batch()
    ref = logits(src.model, batch)
    step = {"method": method, "size_mb_before": size_mb(src.run / WEIGHTS), "checked_on": probe,
            "params_before": sum(p.numel() for p in src.model.parameters())}
    t0 = time.time()
    out = src.run.derive(output, method)
    backend, weights = "torch", out / WEIGHTS
    if method == "dynamic-int8":
        step["quantized"] = quantize_dynamic_int8(src.model)
        out.save_weights(int8_state(src.model), {"quantized": method})
        in_memory = logits(src.model, batch)
    elif method in ("fp16", "bf16"):
        out.save_weights(half_state(src.model, method), {"quantized": method})
        if method == "bf16":
            step["precision"] = "bf16"
    else:
        backend, weights = "onnx", out / ONNX
        reused = current_export(src)  # `mmfit export` traced these weights already: not twice
        step["graph"] = "the run's model.onnx (export.json: these weights)" if reused else "traced now"
        fp32 = reused or export_onnx(src.model, src.pre, out / ".fp32.onnx")
        step["quantized"] = onnx_int8(fp32, weights)
        if not reused:
            fp32.unlink()
    out.add_step(src.run, step)
    loaded = Predictor.load(out.path, backend=backend)
    if method == "dynamic-int8":  # what was saved is what was quantized: reloading must be exact
        step["max_abs_diff_reload"] = max_diff(in_memory, logits(loaded.model, batch))
    step.update(_measure(loaded, ref, batch, weights, before), backend=backend, seconds=round(time.time() - t0, 1))
    return out.add_step(src.run, step) | {"output": str(out)}


def distill_run(teacher: PathLike, student_config: PathLike, overrides: Optional[list[str]] = None,
                run_dir: Optional[PathLike] = None, df=None, console=None) -> dict:
    """Train the student config with the teacher's soft targets. The student's `data` section
    defaults to the teacher's (same manifest, columns, split), so rows and splits match."""
    teacher = load_run(teacher)
    raw = read_config_file(student_config)
    raw.setdefault("data", teacher.cfg.to_dict()["data"])
    raw.setdefault("distill", {})["teacher"] = str(teacher.run)
    cfg = load_config(raw, overrides)
    student = load_run(train(cfg, df=df, run_dir=Path(run_dir) if run_dir else None, console=console))
    t_metrics, s_metrics = _run_metrics(teacher), _run_metrics(student)
    step = {"method": "distill", "teacher": str(teacher.run), "temperature": cfg.distill.temperature,
            "alpha": cfg.distill.alpha, "feature_weight": cfg.distill.feature_weight,
            "params_before": sum(p.numel() for p in teacher.model.parameters()),
            "params": sum(p.numel() for p in student.model.parameters()),
            "size_mb_before": size_mb(teacher.run / WEIGHTS), "size_mb": size_mb(student.run / WEIGHTS),
            "test_score_before": primary_score(t_metrics), "test_score": primary_score(s_metrics),
            "test_metrics": s_metrics}
    # a student starts a record of its own: its teacher's steps did not make it
    return student.run.add_step(teacher.run, step, inherit=False) | {"output": str(student.run)}


def merge_run(run: PathLike, output: Optional[PathLike] = None, data: Optional[PathLike] = None,
              n: int = 64) -> dict:
    """`mmfit merge RUN`: fold LoRA/IA3 adapters into the base weights -> a run whose config says
    `full`, which loads and predicts without peft. Parity is measured, not assumed: the adapted model
    and the merged run, loaded back from disk, predict the same rows (largest difference reported)."""
    src = load_run(run)
    if not any(has_adapters(e) for e in src.model.encoders.values()):
        raise ValueError(f"{src.run}: no encoder was trained with adapters (finetune lora or ia3); nothing to merge")
    batch, probe = src.sample_batch(data, n)
    before = logits(src.model, batch)
    merged = merge_adapters(src.model)
    for m in merged:
        encoder_config(src.cfg, m).finetune.strategy = "full"
    out = src.run.derive(output, "merged")
    out.save_weights(src.model, {"merged_from": str(src.run)})
    out.write_text(CONFIG, src.cfg.to_yaml())
    out.save_params(parameter_summary(src.model))
    reloaded = load_run(out)  # from disk, as a deployment would load it
    after = logits(reloaded.model, batch)
    prob = {t: v.softmax(-1) for t, v in before.items()}, {t: v.softmax(-1) for t, v in after.items()}
    report = {"source": str(src.run), "output": str(out), "merged_layers": merged, "checked_on": probe,
              "max_abs_diff_logits": max_diff(before, after), "max_abs_diff_probs": max_diff(*prob),
              "params": sum(p.numel() for p in reloaded.model.parameters())}
    out.write_json(MERGE, report)
    return report
