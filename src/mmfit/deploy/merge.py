"""`mmfit merge RUN`: fold LoRA/IA3 adapters into the base weights -> a plain run directory.

The merged run has the module structure of a `full` fine-tune (config says so), so it loads and
predicts without peft. Parity is measured, not assumed: the adapted model and the merged run,
loaded back from disk, predict the same rows and the largest absolute difference is reported.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Union

from mmfit.config import encoder_config
from mmfit.optimize.derive import logits, max_diff, new_run, sample_batch
from mmfit.training.checkpoint import save_weights
from mmfit.training.finetune import merge_adapters


def merge_run(run_dir: Union[str, Path], out_dir: Optional[Union[str, Path]] = None,
              data: Optional[Union[str, Path]] = None, n: int = 64) -> dict:
    from mmfit.deploy.predictor import Predictor

    run_dir = Path(run_dir)
    pred = Predictor.load(run_dir)
    adapted = [m for m, e in pred.model.encoders.items() if hasattr(e, "peft_config")]
    if not adapted:
        raise ValueError(f"{run_dir}: no encoder was trained with adapters (finetune lora or ia3); nothing to merge")
    batch, probe = sample_batch(pred, data, n)
    before = logits(pred.model, batch)

    merged = merge_adapters(pred.model)
    for m in merged:
        encoder_config(pred.cfg, m).finetune.strategy = "full"
    out_dir = new_run(run_dir, out_dir, "merged")
    save_weights(pred.model, out_dir / "model.safetensors", {"merged_from": str(run_dir)})
    (out_dir / "config.yaml").write_text(pred.cfg.to_yaml())

    reloaded = Predictor.load(out_dir)  # from disk, as a deployment would load it
    after = logits(reloaded.model, batch)
    prob = {t: v.softmax(-1) for t, v in before.items()}, {t: v.softmax(-1) for t, v in after.items()}
    report = {"source": str(run_dir), "output": str(out_dir), "merged_layers": merged, "checked_on": probe,
              "max_abs_diff_logits": max_diff(before, after), "max_abs_diff_probs": max_diff(*prob),
              "params": sum(p.numel() for p in reloaded.model.parameters())}
    (out_dir / "merge.json").write_text(json.dumps(report, indent=2))
    return report
