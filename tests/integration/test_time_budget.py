"""Under train.time_limit the learning-rate schedule ends with the time: a run that stops on time has
decayed its rate, not been cut off at the peak of a schedule planned for epochs it never ran."""

import json
import time

import pytest

from conftest import make_dataset, tiny_config
from mmfit.training import loop
from mmfit.training.loop import epochs_within, lr_factor


def test_epochs_within_counts_the_epochs_that_fit():
    assert epochs_within(done=2, left=100.0, each=10.0, most=30) == 12
    assert epochs_within(done=2, left=100.0, each=10.0, most=8) == 8  # never more than asked for
    assert epochs_within(done=2, left=5.0, each=10.0, most=30) == 3  # the epoch about to start counts
    assert epochs_within(done=0, left=1e9, each=0.0, most=30) == 30


def _records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_time_limited_run_decays_its_learning_rate_before_the_limit(tmp_path, quiet_console, monkeypatch):
    import mmfit

    data = make_dataset(tmp_path / "data", n=40)
    slow = 0.2  # seconds an epoch: the epochs' own work (milliseconds here) does not decide the count
    real = loop.train_epoch

    def slow_epoch(*a, **k):
        time.sleep(slow)
        return real(*a, **k)

    monkeypatch.setattr(loop, "train_epoch", slow_epoch)
    cfg = tiny_config(data, tmp_path, train__epochs=200, train__patience=1000, train__lr=1e-3,
                      train__time_limit=30 * slow)  # setup counts too
    run = mmfit.train(cfg, run_dir=tmp_path / "limited", console=quiet_console)
    recs = _records(run)
    assert 5 <= len(recs) < 200, len(recs)  # stopped by the time limit
    planned = recs[-1]["planned_epochs"]
    assert planned < 40, planned  # the schedule was laid over the epochs that fit, not 200
    # the last epoch ran near the end of its schedule: its rate is a small part of the peak; cut off
    # from a 200-epoch cosine after 10-20 epochs (still in its warmup) it would still be near 1e-3
    assert recs[-1]["lr"] < 0.3e-3, [r["lr"] for r in recs]
    peak = max(r["lr"] for r in recs)
    assert peak > 0.5e-3
    # without a time limit nothing changes: the schedule over train.epochs, no plan in the records
    cfg = tiny_config(data, tmp_path, train__epochs=4, train__lr=1e-3)
    plain = _records(mmfit.train(cfg, run_dir=tmp_path / "plain", console=quiet_console))
    assert all("planned_epochs" not in r for r in plain)
    steps = plain[0]["step"]
    total = steps * 4
    assert plain[-1]["lr"] == pytest.approx(1e-3 * lr_factor(plain[-1]["step"] - 1, total, int(0.1 * total)))


def test_a_resumed_run_goes_on_with_its_plan(tmp_path, quiet_console, monkeypatch):
    import mmfit

    data = make_dataset(tmp_path / "data", n=40)
    real = loop.train_epoch

    def slow_epoch(*a, **k):
        time.sleep(0.3)
        return real(*a, **k)

    monkeypatch.setattr(loop, "train_epoch", slow_epoch)
    cfg = tiny_config(data, tmp_path, train__epochs=100, train__patience=1000, train__lr=1e-3,
                      train__time_limit=3.0)
    run = mmfit.train(cfg, run_dir=tmp_path / "r", console=quiet_console)
    before = _records(run)
    planned = before[-1]["planned_epochs"]
    assert planned < 100
    mmfit.train(resume=run, console=quiet_console)
    after = _records(run)[len(before)]
    # the first epoch after the resume follows the plan in the checkpoint, not a 100-epoch schedule
    total = after["step"] // (after["epoch"] + 1) * planned
    assert after["lr"] == pytest.approx(1e-3 * lr_factor(after["step"] - 1, total, int(0.1 * total)))
    assert after["planned_epochs"] == planned
