"""mmfit tune: workers share one Optuna study, bad trials are pruned early, the best config trains."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from conftest import make_dataset, tiny_config
from mmfit import api
from mmfit.config import ConfigError, load_config

optuna = pytest.importorskip("optuna")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tune")
    return make_dataset(tmp / "data"), tmp


def _cfg(manifest, tmp, **tune):
    cfg = tiny_config(manifest, tmp, train__epochs=2)
    cfg["data"]["columns"] = {"text": "text", "x1": "numeric"}  # small and quick
    cfg["tune"] = {"sampler": "random", "pruner": "none", "trials": 4, **tune}
    return cfg


@pytest.mark.slow
def test_two_workers_share_one_study_and_write_the_best_config(data):
    manifest, tmp = data
    cfg = _cfg(manifest, tmp, trials=6, space={
        "train.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
        "model.fusion": {"type": "categorical", "choices": ["concat", "gated"]}})
    out = tmp / "study-workers"
    summary = api.tune(cfg, workers=2, out=out)
    assert summary["completed"] == 6 and summary["workers"] == 2  # both processes ran trials, none past the budget
    study = optuna.load_study(study_name="mmfit", storage=f"sqlite:///{out / 'study.db'}")
    assert len(study.trials) == summary["trials"]
    trials = pd.read_csv(out / "trials.csv")
    assert trials["worker"].nunique() == 2 and trials["state"].eq("COMPLETE").sum() == 6
    assert sorted(trials["number"]) == list(range(6))
    best = load_config(out / "best.yaml")  # ready for mmfit train
    assert best.model.fusion == summary["best_params"]["model.fusion"]
    assert abs(best.train.lr - summary["best_params"]["train.lr"]) < 1e-12
    assert "tune" not in yaml.safe_load((out / "best.yaml").read_text())
    assert summary["best_value"] == max(t.value for t in study.trials if t.value is not None)
    for f in ("history.png", "importance.png", "tune.json"):
        assert (out / f).stat().st_size > 0


def test_a_bad_trial_is_pruned_early(data):
    """Two good learning rates first (enqueued), then a useless one: the median pruner stops it
    before its last epoch."""
    manifest, tmp = data
    cfg = _cfg(manifest, tmp, trials=3, pruner="median", startup_trials=2, warmup_epochs=0,
               space={"train.lr": {"type": "float", "low": 1e-8, "high": 1e-2, "log": True}},
               enqueue=[{"train.lr": 5e-3}, {"train.lr": 5e-3}, {"train.lr": 1e-8}])
    cfg["train"].update(epochs=8, patience=20)
    out = tmp / "study-prune"
    summary = api.tune(cfg, out=out)
    trials = pd.read_csv(out / "trials.csv").set_index("number")
    assert trials.loc[2, "state"] == "PRUNED", trials
    assert trials.loc[2, "epochs"] < 8  # stopped early
    assert trials.loc[0, "state"] == "COMPLETE" and summary["pruned"] == 1
    assert json.loads((out / "tune.json").read_text())["best_trial"] in (0, 1)


def test_grid_sampler_covers_the_grid_and_bad_spaces_are_named(data):
    manifest, tmp = data
    cfg = _cfg(manifest, tmp, sampler="grid", trials=10, space={
        "model.dim": {"type": "int", "low": 8, "high": 16, "step": 8},
        "train.lr": {"type": "float", "choices": [1e-3, 3e-3]}})
    cfg["train"]["epochs"] = 1
    summary = api.tune(cfg, out=tmp / "study-grid")
    assert summary["trials"] == 4  # 2 x 2, not 10
    seen = pd.read_csv(tmp / "study-grid" / "trials.csv")[["params.model.dim", "params.train.lr"]]
    assert len(seen.drop_duplicates()) == 4
    bad = _cfg(manifest, tmp, space={"train.lrr": {"type": "float", "low": 1e-3, "high": 1e-2}})
    with pytest.raises(ConfigError, match="tune.space.train.lrr.*did you mean 'lr'"):
        api.tune(bad, out=tmp / "bad")
    nogrid = _cfg(manifest, tmp, sampler="grid", space={"train.lr": {"type": "float", "low": 1e-3, "high": 1e-2}})
    with pytest.raises(ConfigError, match="grid search needs"):
        api.tune(nogrid, out=tmp / "bad2")
    with pytest.raises(ConfigError, match="low < high"):
        load_config(_cfg(manifest, tmp, space={"train.lr": {"type": "float", "low": 1e-2, "high": 1e-3}}))

