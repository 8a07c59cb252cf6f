"""A run killed with SIGKILL mid-training and continued with --resume ends where an
uninterrupted run with the same seed ends."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from conftest import make_dataset, tiny_config


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path, quiet_console):
    import mmfit
    from mmfit.run.checkpoints import load_weights  # noqa: F401

    data = make_dataset(tmp_path / "data", n=150)
    cfg = tiny_config(data, tmp_path, train__epochs=6, model__dim=32)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))

    ref = mmfit.train(cfg, run_dir=tmp_path / "ref", console=quiet_console)

    run = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "mmfit.cli", "train", str(tmp_path / "cfg.yaml"),
                             "--output", str(run)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
            break
        if proc.poll() is not None:
            pytest.fail(f"training exited early: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "eval" / "test.json").exists(), "the run finished before it could be killed"
    done = len(metrics.read_text().splitlines())
    assert 2 <= done < 6

    mmfit.train(resume=run, console=quiet_console)
    a = [json.loads(x) for x in (ref / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in b] == list(range(6))
    for x, y in zip(a, b):
        assert abs(x["val"]["label/macro_f1"] - y["val"]["label/macro_f1"]) <= 0.01
        assert abs(x["train"]["total"] - y["train"]["total"]) < 1e-3
    fa = json.loads((ref / "eval" / "test.json").read_text())["metrics"]["label"]["macro_f1"]
    fb = json.loads((run / "eval" / "test.json").read_text())["metrics"]["label"]["macro_f1"]
    assert abs(fa - fb) <= 0.01
