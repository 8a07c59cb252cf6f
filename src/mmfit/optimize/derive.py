"""What every command that turns one run into another shares: copying the run's preprocessing
into a new directory, a batch of real rows to compare outputs on, sizes, test metrics, and the
`compression.json` record (each step appended to the source's own record)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional, Union

import torch

from mmfit.data.batch import Batch
from mmfit.data.manifest import read_manifest

# not carried into a derived run: training state, logs, evaluations and weights of the source
SKIP = ("checkpoints", "tb", "adapters", "model.safetensors", "model.onnx", "eval", "export.json",
        "compression.json", "merge.json", "metrics.jsonl")


def new_run(source: Path, out: Optional[Union[str, Path]], suffix: str) -> Path:
    out = Path(out) if out else source.with_name(f"{source.name}-{suffix}")
    if out.exists():
        raise FileExistsError(f"{out} already exists; choose another --output")
    shutil.copytree(source, out, ignore=lambda d, names: [x for x in names if Path(d) == source and x in SKIP])
    return out


def sample_batch(pred, data: Optional[Union[str, Path]] = None, n: int = 64) -> tuple[Batch, str]:
    """Real rows from `data` or the run's own manifest; random inputs of the right shapes otherwise."""
    from mmfit.deploy.export import example_inputs, input_spec

    source = data or pred.cfg.data.manifest
    if source and Path(source).exists():
        df = read_manifest(Path(source)).head(n)
        root = Path(pred.cfg.data.root) if pred.cfg.data.root else Path(source).resolve().parent
        tensors, _ = pred.pre.transform(df, root, on_error="skip", log=lambda *_: None)
        if len(tensors):
            return tensors.batch(torch.arange(len(tensors))), f"{len(tensors)} rows of {source}"
    spec = input_spec(pred.pre, pred.cfg)
    torch.manual_seed(0)
    flat = iter(example_inputs(spec, n, random_ids=_vocab_sizes(pred)))
    inputs, present = {}, {}
    for m, tensors in spec.items():
        inputs[m] = {k: next(flat) for k in tensors}
        present[m] = torch.ones(n, dtype=torch.bool)
        next(flat)
    return Batch(inputs, present), f"{n} random inputs (no data found to check on)"


def _vocab_sizes(pred) -> dict[str, int]:
    sizes = {f"{m}.input_ids": max(5, t.vocab_size) for m, t in pred.pre.texts.items()}
    if pred.pre.tabular:
        sizes["tabular.categories"] = 1
    return sizes


def without(batch: Batch, modality: str) -> Batch:
    present = dict(batch.present)
    present[modality] = torch.zeros_like(present[modality])
    return Batch(batch.inputs, present)


@torch.no_grad()
def logits(model, batch: Batch, precision: str = "fp32") -> dict[str, torch.Tensor]:
    model.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        return {t: v.float() for t, v in model(batch.inputs, batch.present).logits.items()}


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[t] - b[t]).abs().max()) for t in a)


def megabytes(path: Path) -> float:
    return round(path.stat().st_size / 1e6, 3)


def test_metrics(pred, split: str = "test") -> Optional[dict]:
    """Metrics of a loaded run (any backend) on its own split, if its data is reachable."""
    from mmfit.data.prepare import prepare_training
    from mmfit.training.evaluate import evaluate_data

    if not pred.cfg.data.manifest or not Path(pred.cfg.data.manifest).exists():
        return None
    _, splits, _ = prepare_training(pred.cfg, None, None, log=lambda *a: None, fitted=pred.pre)
    if not len(splits[split]):
        return None
    res = evaluate_data(pred.model, splits[split], pred.pre, 64, pred.device, ablation=False,
                        precision=pred.precision)
    return res["metrics"]


def primary_score(metrics: Optional[dict]) -> Optional[float]:
    if not metrics:
        return None
    task = next(iter(metrics))
    m = metrics[task]
    return m.get("macro_f1", m.get("r2"))


def write_record(source: Path, out: Path, step: dict) -> dict:
    """compression.json: the source's steps (if it was compressed before) plus this one."""
    prev = source / "compression.json"
    steps = json.loads(prev.read_text())["steps"] if prev.exists() else []
    record = {"source": str(source), "steps": steps + [step]}
    (out / "compression.json").write_text(json.dumps(record, indent=2))
    return record


def read_record(run: Path) -> dict:
    f = run / "compression.json"
    return json.loads(f.read_text()) if f.exists() else {"steps": []}
