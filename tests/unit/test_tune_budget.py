"""A study's budget is exact: workers racing for trials on one storage run each trial of the budget
once and none past it (optuna's MaxTrialsCallback lets racing workers start extra ones)."""

from __future__ import annotations

import threading

import pytest

from mmfit.config import load_config
from mmfit.optimize.tune import _take, plan, suggest

optuna = pytest.importorskip("optuna")


def _cfg(sampler: str, space: dict):
    return load_config({"data": {"manifest": "m.csv", "columns": {"x": "numeric"}, "targets": {"y": "classification"}},
                        "tune": {"sampler": sampler, "space": space}})


def _study(tmp_path, cfg, name="s"):
    from mmfit.optimize.tune import _study as open_study

    return open_study(cfg, f"sqlite:///{tmp_path / 'study.db'}", name, "maximize")


def _race(tmp_path, cfg, budget: int, workers: int) -> list[int]:
    """`workers` threads, each with its own handle on the storage, take and finish trials as fast as they can."""
    from mmfit.optimize.tune import _study as open_study

    taken, go, url = [], threading.Barrier(workers), f"sqlite:///{tmp_path / 'study.db'}"

    def worker():
        study = open_study(cfg, url, "s")
        go.wait()
        while (trial := _take(study, budget, url)) is not None:
            key, p = next(iter(cfg.tune.space.items()))
            x = suggest(trial, key, p)
            taken.append(trial.number)
            study.tell(trial, x)

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return taken


def test_racing_workers_run_each_trial_of_the_budget_once_and_none_past_it(tmp_path):
    cfg = _cfg("random", {"x": {"type": "float", "low": 0.0, "high": 1.0}})
    study = _study(tmp_path, cfg)
    assert plan(study, cfg, 6) == 6 and plan(study, cfg, 6) == 0  # a second worker's plan adds nothing
    study.enqueue_trial({})  # as a second planner racing the first would: number 6, past the budget
    taken = _race(tmp_path, cfg, 6, workers=3)
    assert sorted(taken) == list(range(6))
    states = [t.state for t in study.get_trials()]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 6 and states[6] == optuna.trial.TrialState.WAITING
    assert plan(study, cfg, 8) == 1  # a bigger budget joined later: the waiting number 6 is part of it
    assert sorted(_race(tmp_path, cfg, 8, workers=2)) == [6, 7]


def test_a_grid_budget_is_its_points_each_once_in_the_samplers_seeded_order(tmp_path):
    lrs = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2]
    cfg = _cfg("grid", {"train.lr": {"type": "float", "choices": lrs}})
    study = _study(tmp_path, cfg)
    assert plan(study, cfg, 3) == 3
    _race(tmp_path, cfg, 3, workers=3)
    first = [t.params["train.lr"] for t in study.get_trials()]
    assert len(set(first)) == 3 and set(first) <= set(lrs)
    assert plan(study, cfg, 5) == 2  # the rest of the grid, nothing tried twice
    _race(tmp_path, cfg, 5, workers=2)
    assert sorted(t.params["train.lr"] for t in study.get_trials()) == lrs
    (tmp_path / "again").mkdir()
    again = _study(tmp_path / "again", cfg)
    plan(again, cfg, 3)
    assert [t.system_attrs["fixed_params"]["train.lr"] for t in again.get_trials()] == first  # seeded order
