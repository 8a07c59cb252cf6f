"""A column of vectors (an embedding or features computed elsewhere, one list of numbers a cell):
trained on as one token, predicted from lists or from text, served, exported to ONNX, and corrupted by
the robustness harness like the other table columns."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import make_dataset, tiny_config
from mmfit import Predictor, api
from mmfit.evaluation.robustness import corruption_plan
from mmfit.run.layout import EXPORT
from mmfit.run.store import Run


def test_a_vector_column_trains_predicts_serves_and_exports(tmp_path, quiet_console):
    manifest = make_dataset(tmp_path / "data")
    df = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    k = np.array(["abc".index(v) for v in df["label"]])
    emb = np.random.default_rng(1).normal(size=(len(df), 6)) + 3 * np.eye(6)[k]
    df["emb"] = [json.dumps([round(float(x), 4) for x in e]) for e in emb]
    df.to_csv(manifest, index=False)
    cfg = tiny_config(manifest, tmp_path, data__columns={"text": "text", "emb": "vector", "x1": "numeric"},
                      data__targets={"label": "classification"}, train__epochs=3)
    run = api.train(cfg, run_dir=tmp_path / "run", console=quiet_console)
    assert ("emb", "missing") in corruption_plan(Run(run).config())
    pred = Predictor.load(run)
    rows = df.iloc[:4][["text", "emb", "x1"]].copy()
    as_text = pred.predict(rows, root=manifest.parent)
    rows["emb"] = [json.loads(v) for v in rows["emb"]]  # lists, as a DataFrame or JSONL holds them
    as_lists = pred.predict(rows, root=manifest.parent)
    assert np.allclose(as_text.filter(like="label_prob").to_numpy(float), as_lists.filter(like="label_prob").to_numpy(float))
    with pytest.raises(ValueError, match="--by emb: a column of lists .a vector. has no values to slice by"):
        api.evaluate(run, by="emb", console=quiet_console)
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from mmfit.deploy.server import create_app

    with TestClient(create_app(run)) as client:
        res = client.post("/predict", json={"inputs": {"text": rows["text"].iloc[0], "emb": rows["emb"].iloc[0],
                                                       "x1": float(rows["x1"].iloc[0])}})
        assert res.status_code == 200, res.text
        assert np.isclose(res.json()["label"]["probabilities"][as_lists["label"].iloc[0]],
                          as_lists[f"label_prob_{as_lists['label'].iloc[0]}"].iloc[0], atol=1e-5)
        bad = client.post("/predict", json={"inputs": {"emb": {"a": 1}}})
        assert bad.status_code == 422 and "field 'emb': expected a list of numbers" in bad.text
        meta = {i["name"]: i for i in client.get("/metadata").json()["inputs"]}
        assert meta["emb"]["type"] == "vector" and meta["emb"]["send"].startswith("a list of 6 numbers")
        schema = client.get("/openapi.json").json()
        assert '"emb": {"type": "array", "items": {"type": "number"}}' in json.dumps(schema)
    pytest.importorskip("onnxruntime")
    api.export(run, console=quiet_console)
    assert Run(run).read_json(EXPORT)["max_abs_diff"] < 1e-4
