"""mmfit train --nproc 2: DistributedDataParallel and FSDP on CPU (gloo) step like one process
with the same global batch and seed, and only rank 0 writes the run directory."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from conftest import make_dataset, tiny_config
from mmfit import api


def _curve(run):
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [x["epoch"] for x in lines], [x["train"]["total"] for x in lines], [x["val"]["label/macro_f1"] for x in lines]


def _two(path, run, *extra):
    proc = subprocess.run([sys.executable, "-m", "mmfit.cli", "train", str(path), "--nproc", "2", *extra,
                           *(["--output", str(run)] if "--resume" not in extra else [])],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_match_one_with_the_same_global_batch(tmp_path, strategy):
    from rich.console import Console

    manifest = make_dataset(tmp_path / "data", n=120)
    # dropout off, so both runs draw no randomness beyond the shared batch order: what is left to
    # differ is how the gradient of a global batch is summed (one process, or two halves averaged)
    cfg = tiny_config(manifest, tmp_path, train__epochs=4, train__modality_dropout=0.0, model__dropout=0.0)
    for enc in cfg["model"]["encoders"].values():
        enc["dropout"] = 0.0
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cfg["train"]["strategy"] = strategy
    path2 = tmp_path / "cfg2.yaml"
    path2.write_text(yaml.safe_dump(cfg))
    # both runs read the same file (column order decides the order modules are built and seeded)
    one = api.train(str(path), run_dir=tmp_path / "one", console=Console(quiet=True))
    two = tmp_path / "two"
    proc = _two(path2, two)
    assert f"2 processes ({'FSDP' if strategy == 'fsdp' else 'DDP'}" in proc.stdout.replace("\n", " ")
    if strategy == "fsdp":  # rank 0 holds about half of the parameters
        import re

        held, total = (int(x.replace(",", "")) for x in re.search(r"rank 0 holds ([\d,]+) of the ([\d,]+)",
                                                                    proc.stdout.replace("\n", " ")).groups())
        assert 0.4 * total < held < 0.6 * total, (held, total)
    e1, loss1, f1_1 = _curve(one)
    e2, loss2, f1_2 = _curve(two)
    assert e2 == e1 == [0, 1, 2, 3]  # one line per epoch: only rank 0 wrote
    for a, b in zip(loss1, loss2):
        assert abs(a - b) <= 1e-3 * max(1.0, abs(a)), (loss1, loss2)
    test1 = json.loads((one / "eval" / "test.json").read_text())["metrics"]["label"]["macro_f1"]
    test2 = json.loads((two / "eval" / "test.json").read_text())["metrics"]["label"]["macro_f1"]
    assert abs(test1 - test2) <= 0.01
    assert (two / "model.safetensors").exists() and (two / "checkpoints" / "last.safetensors").exists()
    if strategy == "fsdp":
        # the gathered checkpoint is a plain full one: a sharded run resumes a 1-process run's
        import shutil

        resumed = tmp_path / "resumed"
        shutil.copytree(one, resumed)
        conf = yaml.safe_load((resumed / "config.yaml").read_text())
        conf["train"].update(epochs=5, strategy="fsdp")
        (resumed / "config.yaml").write_text(yaml.safe_dump(conf))
        proc = _two(path2, resumed, "--resume", str(resumed))
        epochs, losses, _ = _curve(resumed)
        assert epochs == [0, 1, 2, 3, 4] and losses[:4] == loss1 and losses[4] < losses[0], losses
        assert "resumed from" in proc.stdout
