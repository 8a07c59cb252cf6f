"""model.head: convex: a logistic / ridge regression on frozen encoders' outputs, C chosen by k-fold
cross-validation, fitted in closed form; out-of-fold logits kept; loaded, predicted and exported
like any run (the head is one linear layer)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import make_dataset, tiny_config
from mmfit import Predictor, api
from mmfit.run.layout import EXPORT, OOF
from mmfit.run.loaded import load_run
from mmfit.run.store import Run
from mmfit.training.convex import CS, cross_validated


def _cfg(manifest, tmp_path, **extra):
    cfg = tiny_config(manifest, tmp_path, **{"model__head": "convex", **extra})
    for k in ("image", "audio", "text"):
        cfg["model"]["encoders"][k]["finetune"] = {"strategy": "frozen"}
    cfg["model"]["encoders"]["tabular"] = {"name": "table-stats"}
    return cfg


def test_cross_validation_picks_the_c_of_the_lowest_out_of_fold_loss_and_refits_on_all_rows():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.normal(size=(240, 30))
    y = (X[:, :3] @ np.array([2.0, -1.5, 1.0]) + rng.normal(0, 1.0, 240) > 0).astype(int) + 2 * (X[:, 3] > 1)
    res = cross_validated("classification", X, y, 4, folds=5, seed=0)
    losses = dict(res["grid"])
    assert res["c"] == min(losses, key=losses.get) and res["c"] in CS
    assert list(losses) == list(CS[:len(losses)])  # strong to weak, stopped after two rises at most
    assert res["oof"].shape == (240, 4) and res["weight"].shape == (4, 30)
    ref = LogisticRegression(C=res["c"], max_iter=2000).fit(X, y)
    ours = X @ res["weight"].T + res["bias"]
    assert (ours.argmax(1) == ref.predict(X)).mean() > 0.97  # the same model, up to the solver's tolerance
    # out-of-fold accuracy is what the rows' own fit would overstate
    assert (res["oof"].argmax(1) == y).mean() <= (ours.argmax(1) == y).mean() + 1e-9
    reg = cross_validated("regression", X, X[:, 0] * 2 + rng.normal(0, 0.1, 240), 1, folds=4, seed=0)
    assert reg["weight"].shape == (1, 30) and abs(reg["weight"][0, 0] - 2) < 0.1


def test_a_class_some_rows_lack_gets_no_probability_and_binary_tasks_give_two_logits():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(60, 5))
    y = (X[:, 0] > 0).astype(int) * 2  # classes 0 and 2 of 3
    res = cross_validated("classification", X, y, 3, folds=3, seed=0)
    logits = X @ res["weight"].T + res["bias"]
    assert logits[:, 1].max() < -20 and (logits.argmax(1) == y).mean() > 0.9


def test_a_convex_run_keeps_out_of_fold_logits_and_predicts_and_exports_like_a_run(tmp_path, quiet_console):
    manifest = make_dataset(tmp_path / "data", n=90)
    cfg = _cfg(manifest, tmp_path, model__crossfit={"rows": "labelled", "folds": 3})
    run = Run(api.train(cfg, run_dir=tmp_path / "run", console=quiet_console))
    record = run.history()[0]
    assert len(run.history()) == 1 and record["convex"]["rows"] == "labelled"
    heads = {(h["task"], h["head"]) for h in record["convex"]["heads"]}
    assert heads == {("label", "fused"), ("score", "fused")} | {("label", f"aux:{m}")
                                                                 for m in ("image", "audio", "text", "tabular")}
    loaded = load_run(run)
    splits = loaded.data()
    oof = run.read_arrays(OOF)
    fitted = np.concatenate([splits["train"].rows.numpy(), splits["val"].rows.numpy()])
    assert sorted(oof["rows"].tolist()) == sorted(fitted.tolist())  # train + val, each out of its fold
    assert oof["logits/label/fused"].shape == (len(fitted), 3)
    assert "val" in record and record["val"]["label/macro_f1"] > 0.7  # out of fold: the rows the fit did not see
    assert "fitted on the val rows too" in run.evaluation("val")["note"]
    test = run.evaluation("test")["metrics"]
    assert test["label"]["macro_f1"] > 0.8 and test["score"]["r2"] > 0.5
    rows = splits["test"].rows[:6].tolist()
    df = pd.read_csv(manifest, dtype=str, keep_default_na=False).iloc[rows]
    pred = Predictor.load(run.path).predict(df, root=manifest.parent)
    assert (pred["label"].to_numpy() == df["label"].to_numpy()).mean() >= 0.8
    pytest.importorskip("onnxruntime")
    api.export(run.path, console=quiet_console)
    assert run.read_json(EXPORT)["max_abs_diff"] < 1e-4


def test_on_training_rows_alone_validation_is_scored_as_usual(tmp_path, quiet_console):
    manifest = make_dataset(tmp_path / "data", n=60)
    run = Run(api.train(_cfg(manifest, tmp_path), run_dir=tmp_path / "run", console=quiet_console))
    oof = run.read_arrays(OOF)
    assert len(oof["rows"]) == len(load_run(run).data()["train"])
    assert "note" not in run.evaluation("val")


def test_tree_head_walks_scikit_learns_trees_to_the_same_raw_scores():
    import torch
    from sklearn.ensemble import HistGradientBoostingClassifier

    from mmfit.models.heads import TreeHead
    from mmfit.models.heads import Pooled
    from mmfit.training.trees import _arrays, _trees, cross_fitted

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 6)).astype(np.float32)
    y = ((X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 1)).astype(int)
    est = HistGradientBoostingClassifier(max_iter=30).fit(X, y)
    trees, base, _ = _trees(est, "classification", 3)
    head = TreeHead({"t": 6}, 3)
    head.set_trees(**_arrays([n for n, _ in trees], [o for _, o in trees], [1.0] * len(trees), base))
    out = head({"t": Pooled(torch.from_numpy(X))}, {"t": torch.ones(300, dtype=torch.bool)}).numpy()
    assert np.abs(out - est._raw_predict(X)).max() < 1e-4
    res = cross_fitted("classification", X, y, 3, folds=4, seed=0)
    assert len(res["iterations"]) == 4 and res["oof"].shape == (300, 3) and (res["oof"].argmax(1) == y).mean() > 0.85
    binary = cross_fitted("classification", X, (X[:, 0] > 0).astype(int), 2, folds=3, seed=0)
    head = TreeHead({"t": 6}, 2)
    head.set_trees(**binary["trees"])
    out = head({"t": Pooled(torch.from_numpy(X))}, {"t": torch.ones(300, dtype=torch.bool)}).numpy()
    assert (out.argmax(1) == (X[:, 0] > 0)).mean() > 0.95  # the bag of the folds' trees


def test_a_trees_run_reads_the_table_alone_and_exports(tmp_path, quiet_console):
    manifest = make_dataset(tmp_path / "data", n=90)
    cfg = _cfg(manifest, tmp_path, model__head="trees", model__crossfit={"rows": "labelled", "folds": 3})
    run = Run(api.train(cfg, run_dir=tmp_path / "run", console=quiet_console))
    record = run.history()[0]["trees"]
    assert {(h["task"], h["head"]) for h in record["heads"]} == {("label", "fused"), ("score", "fused")}
    loaded = load_run(run)
    assert set(loaded.model.heads["label"].modalities) == {"tabular"} and not loaded.model.aux_heads
    assert run.evaluation("test")["metrics"]["label"]["macro_f1"] > 0.7  # x1 carries the class
    assert run.read_arrays(OOF)["logits/label/fused"].shape[1] == 3
    pytest.importorskip("onnxruntime")
    api.export(run.path, console=quiet_console)
    assert run.read_json(EXPORT)["max_abs_diff"] < 1e-4


def test_the_val_rows_are_a_fold_of_their_own_and_can_choose_c_alone():
    """With train + val, the val rows' out-of-fold predictions come from a fit on the training rows
    alone: where val is another speaker, other val clips never inform them."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 8))
    y = (X[:, 0] > 0).astype(int)
    held = np.zeros(200, bool)
    held[150:] = True
    X[150:, 5] = 4.0 + y[150:]  # a "speaker" feature only the val rows show, and it gives their class away
    res = cross_validated("classification", X, y, 2, folds=3, seed=0, held=held)
    from mmfit.training.convex import _folds

    folds = _folds("classification", y, 3, 0, held)
    assert len(folds) == 4 and set(folds[-1][1]) == set(range(150, 200)) and set(folds[-1][0]) == set(range(150))
    assert all(not set(tr) & set(te) for tr, te in folds)
    # the val fold's predictions are those of a fit on the training rows alone, at the chosen C
    from sklearn.linear_model import LogisticRegression

    alone = LogisticRegression(C=res["c"], max_iter=2000).fit(X[:150], y[:150]).decision_function(X[150:])
    ours = res["oof"][150:, 1] - res["oof"][150:, 0]
    assert ((ours > 0) == (alone > 0)).mean() >= 0.95 and np.corrcoef(ours, alone)[0, 1] > 0.99  # up to the solver tolerance
    judged = cross_validated("classification", X, y, 2, folds=3, seed=0, held=held, judge=held)
    assert dict(judged["grid"]).keys() <= set(CS)
