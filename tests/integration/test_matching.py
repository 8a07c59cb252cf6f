"""A matching task end to end: training, retrieval metrics, predict's match score, embed / search /
zero-shot, the server's /embed and /search over a gallery, ONNX export."""

import json

import numpy as np
import pandas as pd
import pytest

from conftest import make_dataset, tiny_config


@pytest.fixture(scope="module")
def matching_run(tmp_path_factory):
    import mmfit
    from rich.console import Console

    tmp = tmp_path_factory.mktemp("matching")
    data = make_dataset(tmp / "data", n=90)
    cfg = tiny_config(data, tmp, train__epochs=10)
    cfg["data"]["targets"] = {"pair": {"type": "matching", "between": ["image", "text"]}, "label": "classification"}
    run = mmfit.train(cfg, run_dir=tmp / "run", console=Console(quiet=True))
    return run, data


def test_matching_trains_and_reports_retrieval_metrics(matching_run):
    run, _ = matching_run
    res = json.loads((run / "eval" / "test.json").read_text())
    m = res["metrics"]["pair"]
    assert {"recall@1", "recall@5", "recall@10", "median_rank", "mrr", "chance_recall@1"} <= set(m)
    assert set(m["directions"]) == {"image->text", "text->image"}
    # three groups of words and image stripes: the pairs are findable far above chance
    assert m["recall@5"] > 5 * m["n"] * m["chance_recall@1"] / m["n"]
    hist = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert hist[-1]["train"]["task/pair"] < hist[0]["train"]["task/pair"]


def test_embed_search_zero_shot_and_predict(matching_run):
    from mmfit import Predictor

    run, data = matching_run
    p = Predictor.load(run)
    df = pd.read_csv(data)
    alone = p.embed(df[["image"]], root=data.parent)
    with_all = p.embed(df, column="image", root=data.parent)
    assert alone.shape == (90, 16) and np.allclose(np.linalg.norm(alone, axis=1), 1, atol=1e-5)
    assert np.allclose(alone, with_all, atol=1e-6)  # a side's vector does not depend on the other inputs
    hits = p.search(df[["text"]].head(4), df[["image"]], k=5, root=data.parent)
    assert len(hits) == 20 and (hits.groupby("query")["score"].apply(lambda s: s.is_monotonic_decreasing)).all()
    words = {"a": "red round small", "b": "blue square large", "c": "green spiky tiny"}
    zs = p.zero_shot(df[["image"]], list(words.values()), template="{} sample", root=data.parent)
    truth = df["label"].map(words)
    assert (zs["label"] == truth).mean() > 0.5  # chance is 1/3
    pred = p.predict(df.head(6), root=data.parent)
    assert pred["pair"].between(-1, 1).all()
    with pytest.raises(ValueError, match="say which side"):
        p.embed(df, root=data.parent)


def test_server_embed_and_search(matching_run):
    from fastapi.testclient import TestClient

    from mmfit.deploy.server import create_app

    run, data = matching_run
    with TestClient(create_app(run, gallery=data)) as c:
        meta = c.get("/metadata").json()
        assert meta["tasks"]["pair"] == {"type": "matching", "between": ["image", "text"]}
        assert meta["gallery"] == {"rows": 90, "sides": ["image", "text"]}
        r = c.post("/embed", json={"inputs": {"text": "blue square large sample"}})
        assert r.status_code == 200 and len(r.json()["embeddings"]["pair"]["text"]) == 16
        r = c.post("/search?k=3", json={"inputs": {"text": "blue square large sample"}})
        body = r.json()
        assert r.status_code == 200 and body["query"] == "text" and len(body["results"]) == 3
        assert body["results"][0]["score"] >= body["results"][1]["score"]
        assert "image" in body["results"][0]["fields"]
        assert c.post("/search?k=0", json={"inputs": {"text": "x"}}).status_code == 422
        assert c.post("/predict", json={"inputs": {"text": "red round"}}).json()["pair"].keys() == {"score"}
    with TestClient(create_app(run)) as c:
        assert c.post("/search", json={"inputs": {"text": "x"}}).status_code == 404


def test_matching_model_exports_to_onnx(matching_run, tmp_path):
    from mmfit.deploy.export import export_run

    run, _ = matching_run
    report = export_run(run, output=tmp_path / "model.onnx")
    assert "pair.logits" in report["outputs"] and report["max_abs_diff"] < 1e-4
