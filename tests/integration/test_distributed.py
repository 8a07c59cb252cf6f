"""mmfit train --nproc 2: DistributedDataParallel and FSDP on CPU (gloo) step like one process
with the same global batch and seed, and only rank 0 writes the run directory."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from conftest import curve as _curve
from conftest import make_dataset, tiny_config, without_dropout
from mmfit import api


def _two(path, run, *extra):
    proc = subprocess.run([sys.executable, "-m", "mmfit.cli", "train", str(path), "--nproc", "2", *extra,
                           *(["--output", str(run)] if "--resume" not in extra else [])],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The one-process run both strategies are compared with (trained once for the two)."""
    from rich.console import Console

    root = tmp_path_factory.mktemp("one")
    manifest = make_dataset(root / "data", n=80)
    # dropout off, so both runs draw no randomness beyond the shared batch order: what is left to
    # differ is how the gradient of a global batch is summed (one process, or two halves averaged)
    cfg = without_dropout(tiny_config(manifest, root, train__epochs=3, data__shard_rows=16))  # 5 blocks a column
    path = root / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    # the two-process runs read the same file but for the strategy (column order decides the order
    # modules are built and seeded)
    return cfg, api.train(str(path), run_dir=root / "one", console=Console(quiet=True))


@pytest.mark.slow
def test_two_ddp_processes_match_one_with_the_same_global_batch(tmp_path, one_process):
    cfg, one = one_process
    # a cache of its own: each rank decodes its share of the blocks (0, 2, 4 and 1, 3), then reads them all
    cfg = {**cfg, "train": {**cfg["train"], "strategy": "ddp"}, "data": {**cfg["data"], "cache_dir": str(tmp_path / "cache")}}
    path2 = tmp_path / "cfg2.yaml"
    path2.write_text(yaml.safe_dump(cfg))
    two = tmp_path / "two"
    proc = _two(path2, two)
    out = proc.stdout.replace("\n", " ")
    assert "2 processes (DDP" in out
    assert ("decoding shared by the processes: rank 0 96 file(s) in 6 shard(s), rank 1 64 file(s) in 4 shard(s)"
            in " ".join(out.split())), proc.stdout
    shards = {}  # the same shards, byte for byte, as the one process wrote
    for name, cache in (("one", one.parent / "cache"), ("two", tmp_path / "cache")):
        shards[name] = {p.relative_to(cache): p.read_bytes() for kind in ("image", "audio")
                        for p in (cache / kind).rglob("*") if p.suffix in (".npy", ".json")}
    assert len(shards["two"]) == 2 * 2 * 5 and shards["two"] == shards["one"]
    e1, loss1, _ = _curve(one)
    e2, loss2, _ = _curve(two)
    assert e2 == e1 == [0, 1, 2]  # one line per epoch: only rank 0 wrote
    for a, b in zip(loss1, loss2):
        assert abs(a - b) <= 1e-3 * max(1.0, abs(a)), (loss1, loss2)
    assert abs(_test_f1(one) - _test_f1(two)) <= 0.01
    assert (two / "model.safetensors").exists() and (two / "checkpoints" / "last.safetensors").exists()


@pytest.mark.slow
def test_two_fsdp_processes_resume_a_one_process_run_and_step_like_it(tmp_path, one_process):
    """The gathered checkpoint is a plain full one: two FSDP processes resume a one-process run (rank 0
    holding about half of the parameters) and take the next epoch as one process does from there."""
    import re
    import shutil

    from rich.console import Console

    cfg, one = one_process
    runs = {}
    for name, strategy in (("alone", "ddp"), ("sharded", "fsdp")):
        runs[name] = tmp_path / name
        shutil.copytree(one, runs[name])
        conf = yaml.safe_load((runs[name] / "config.yaml").read_text())
        conf["train"].update(epochs=4, strategy=strategy)
        (runs[name] / "config.yaml").write_text(yaml.safe_dump(conf))
    api.train(resume=runs["alone"], console=Console(quiet=True))
    proc = _two(runs["sharded"] / "config.yaml", runs["sharded"], "--resume", str(runs["sharded"]))
    out = proc.stdout.replace("\n", " ")
    assert "2 processes (FSDP" in out and "resumed from" in out
    held, total = (int(x.replace(",", "")) for x in re.search(r"rank 0 holds ([\d,]+) of the ([\d,]+)", out).groups())
    assert 0.4 * total < held < 0.6 * total, (held, total)
    _, loss1, _ = _curve(one)
    e_alone, alone, _ = _curve(runs["alone"])
    e_sharded, sharded, _ = _curve(runs["sharded"])
    assert e_alone == e_sharded == [0, 1, 2, 3]  # one line per epoch: only rank 0 wrote
    assert sharded[:3] == alone[:3] == loss1 and sharded[3] < sharded[0]
    assert abs(sharded[3] - alone[3]) <= 1e-3 * max(1.0, abs(alone[3])), (alone, sharded)
    assert abs(_test_f1(runs["alone"]) - _test_f1(runs["sharded"])) <= 0.01


def _test_f1(run):
    return json.loads((run / "eval" / "test.json").read_text())["metrics"]["label"]["macro_f1"]
