"""model.head: neighbours as a run: the training rows stored (no epochs), k and the temperature chosen
on validation and written into config.yaml; loaded, predicted and exported like any run; refit on
train + val with the chosen pair; refused without a frozen encoder."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from conftest import make_dataset, tiny_config
from mmfit import Predictor, api
from mmfit.run.layout import EXPORT
from mmfit.run.loaded import load_run
from mmfit.run.store import Run


def _cfg(manifest, tmp_path, **extra):
    cfg = tiny_config(manifest, tmp_path, model__head="neighbours", **extra)
    for k in ("image", "audio", "text"):
        cfg["model"]["encoders"][k]["finetune"] = {"strategy": "frozen"}
    return cfg


def test_a_neighbours_run_stores_its_rows_chooses_k_on_val_and_predicts_like_a_run(tmp_path, quiet_console):
    manifest = make_dataset(tmp_path / "data", n=90)
    run = Run(api.train(_cfg(manifest, tmp_path), run_dir=tmp_path / "run", console=quiet_console))
    record = run.history()[0]
    nb = record["neighbours"]
    assert len(run.history()) == 1 and nb["rows"] == 54 and len(nb["grid"]) == 20
    best = min(nb["grid"], key=lambda g: g["val_loss"])
    assert (nb["k"], nb["temperature"]) == (best["k"], best["temperature"])
    saved = yaml.safe_load((run.path / "config.yaml").read_text())["model"]["neighbours"]
    assert (saved["k"], saved["temperature"]) == (nb["k"], nb["temperature"])  # rebuilt the same
    test = run.evaluation("test")["metrics"]
    assert test["label"]["macro_f1"] > 0.8 and test["score"]["r2"] > 0.8  # the classes are far apart here
    loaded = load_run(run)
    assert loaded.model.heads["label"].keys.shape[0] == 54 and loaded.model.heads["label"].k == nb["k"]
    assert set(loaded.model.aux_heads) == {"image", "audio", "text"}  # the table's encoder is not frozen
    rows = loaded.data()["test"].rows[:6].tolist()
    df = pd.read_csv(manifest, dtype=str, keep_default_na=False).iloc[rows]
    pred = Predictor.load(run.path).predict(df, root=manifest.parent)
    assert (pred["label"].to_numpy() == df["label"].to_numpy()).mean() >= 0.8
    pytest.importorskip("onnxruntime")
    api.export(run.path, console=quiet_console)
    assert run.read_json(EXPORT)["max_abs_diff"] < 1e-4


def test_a_refit_keeps_k_and_stores_train_and_val_rows(tmp_path, quiet_console):
    manifest = make_dataset(tmp_path / "data", n=90)
    cfg = _cfg(manifest, tmp_path, model__neighbours={"k": 3, "temperature": 0.2},
               data__split={"val": 0.2, "test": 0.2, "seed": 0, "refit": True}, train__selection="last")
    run = Run(api.train(cfg, run_dir=tmp_path / "run", console=quiet_console))
    nb = run.history()[0]["neighbours"]
    assert (nb["rows"], nb["k"], nb["temperature"], nb["grid"]) == (72, 3, 0.2, [])


def test_without_a_frozen_encoder_there_is_nothing_to_compare(tmp_path, quiet_console):
    manifest = make_dataset(tmp_path / "data", n=30)
    cfg = tiny_config(manifest, tmp_path, model__head="neighbours")
    with pytest.raises(ValueError, match="model.head: neighbours compares rows by their frozen encoders' outputs"):
        api.train(cfg, run_dir=tmp_path / "run", console=quiet_console)
