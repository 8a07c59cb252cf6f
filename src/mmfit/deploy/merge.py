"""`mmfit merge RUN`: fold LoRA/IA3 adapters into the base weights -> a plain run directory.

The merged run has the module structure of a `full` fine-tune (config says so), so it loads and
predicts without peft. Parity is measured, not assumed: the adapted model and the merged run,
loaded back from disk, predict the same rows and the largest absolute difference is reported.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional, Union

import torch

from mmfit.config import encoder_config
from mmfit.data.batch import Batch
from mmfit.data.manifest import read_manifest
from mmfit.training.checkpoint import save_weights
from mmfit.training.finetune import merge_adapters

SKIP = ("checkpoints", "tb", "adapters", "model.safetensors", "eval")


def _probe_batch(pred, data: Optional[Union[str, Path]], n: int) -> tuple[Batch, str]:
    """Real rows from `data` or the run's own manifest; random inputs of the right shapes otherwise."""
    source = data or pred.cfg.data.manifest
    if source and Path(source).exists():
        df = read_manifest(Path(source)).head(n)
        root = Path(pred.cfg.data.root) if pred.cfg.data.root else Path(source).resolve().parent
        tensors, _ = pred.pre.transform(df, root, on_error="skip", log=lambda *_: None)
        if len(tensors):
            return tensors.batch(torch.arange(len(tensors))), f"{len(tensors)} rows of {source}"
    g = torch.Generator().manual_seed(0)
    inputs = {m: {k: _random(shape, dt, hi, g) for k, (shape, dt, hi) in spec.items()}
              for m, spec in _shapes(pred, n).items()}
    present = {m: torch.ones(n, dtype=torch.bool) for m in inputs}
    return Batch(inputs, present), f"{n} random inputs (no data found to check on)"


def _random(shape: tuple, dt: str, hi: int, g: torch.Generator) -> torch.Tensor:
    if dt == "int":
        return torch.randint(0, hi, shape, generator=g)
    if dt == "bool":
        return torch.ones(shape, dtype=torch.bool)
    return torch.rand(shape, generator=g)


def _shapes(pred, n: int) -> dict:
    """Input tensor shapes per modality (for the random fallback)."""
    out = {}
    cfg = pred.cfg
    for m in pred.pre.modalities:
        if m in pred.pre.texts:
            t = pred.pre.texts[m]
            out[m] = {"input_ids": ((n, cfg.data.text.max_length), "int", max(5, t.vocab_size)),
                      "attention_mask": ((n, cfg.data.text.max_length), "bool", 0)}
        elif m == "tabular":
            tab = pred.pre.tabular
            out[m] = {"values": ((n, len(tab.numeric)), "float", 0),
                      "categories": ((n, len(tab.categorical)), "int", 1),
                      "feature_mask": ((n, len(tab.numeric) + len(tab.categorical)), "bool", 0)}
        else:
            out[m] = {"x": ((n, *pred.pre.files[m].empty().shape), "float", 0)}
    return out


@torch.no_grad()
def _outputs(model, batch: Batch) -> dict[str, torch.Tensor]:
    model.eval()
    out = model(batch.inputs, batch.present)
    return out.logits


def merge_run(run_dir: Union[str, Path], out_dir: Optional[Union[str, Path]] = None,
              data: Optional[Union[str, Path]] = None, n: int = 64) -> dict:
    from mmfit.deploy.predictor import Predictor

    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir else run_dir.with_name(run_dir.name + "-merged")
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists; choose another --output")
    pred = Predictor.load(run_dir)
    adapted = [m for m, e in pred.model.encoders.items() if hasattr(e, "peft_config")]
    if not adapted:
        raise ValueError(f"{run_dir}: no encoder was trained with adapters (finetune lora or ia3); nothing to merge")
    batch, probe = _probe_batch(pred, data, n)
    before = _outputs(pred.model, batch)

    merged = merge_adapters(pred.model)
    for m in merged:
        encoder_config(pred.cfg, m).finetune.strategy = "full"
    shutil.copytree(run_dir, out_dir, ignore=lambda d, names: [x for x in names if Path(d) == run_dir and x in SKIP])
    save_weights(pred.model, out_dir / "model.safetensors", {"merged_from": str(run_dir)})
    (out_dir / "config.yaml").write_text(pred.cfg.to_yaml())

    reloaded = Predictor.load(out_dir)  # from disk, as a deployment would load it
    after = _outputs(reloaded.model, batch)
    diff = max(float((before[t].float() - after[t].float()).abs().max()) for t in before)
    prob_diff = max(float((before[t].float().softmax(-1) - after[t].float().softmax(-1)).abs().max())
                    for t in before)
    report = {"source": str(run_dir), "output": str(out_dir), "merged_layers": merged, "checked_on": probe,
              "max_abs_diff_logits": diff, "max_abs_diff_probs": prob_diff,
              "params": sum(p.numel() for p in reloaded.model.parameters())}
    (out_dir / "merge.json").write_text(json.dumps(report, indent=2))
    return report
