"""Integrated gradients: completeness (the attributions add up to f(x) - f(x')), maps the shape of
the inputs, shares that sum to one, and a modality that carries the label outweighing noise."""

import numpy as np
import pytest
import torch

from conftest import make_dataset, tiny_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from rich.console import Console

    import mmfit

    tmp = tmp_path_factory.mktemp("ig")
    data = make_dataset(tmp / "data", n=60)
    run = mmfit.train(tiny_config(data, tmp, train__epochs=4), run_dir=tmp / "run", console=Console(quiet=True))
    return mmfit.Predictor.load(run), data


def test_integrated_gradients_are_complete(trained):
    from mmfit.config import modality_kind
    from mmfit.evaluation.attribution import integrated_gradients

    pred, data = trained
    tensors = pred.data()["test"]
    batch = tensors.batch(torch.arange(len(tensors)))
    kinds = {m: modality_kind(pred.cfg, m) for m in pred.model.modalities}
    r = integrated_gradients(pred.model, batch, kinds, "label", "classification", steps=64)
    total = sum(a.flatten(1).sum(1) for a in r["attributions"].values())
    assert set(r["attributions"]) == {"image", "audio", "text", "tabular"}
    err = (total - r["delta"]).abs() / r["delta"].abs().clamp(min=0.1)
    assert float(err.max()) < 0.05, (total, r["delta"])  # completeness, up to the path's discretisation
    assert not pred.model.input_grad and all(p.grad is None for p in pred.model.parameters())


def test_predictor_explain_rows(trained):
    from mmfit.evaluation.attribution import to_json

    pred, data = trained
    import pandas as pd

    df = pd.read_csv(data).head(4)
    df.loc[1, "image"] = None  # an absent modality gets nothing
    rows = pred.explain(df, root=data.parent, steps=8)
    assert len(rows) == 4 and rows[0]["explained"] in ("a", "b", "c")
    r = rows[0]
    assert r["maps"]["image"].shape == (16, 16) and r["maps"]["audio"].ndim == 2
    assert [t for t, _ in r["tokens"]["text"]][:1] and set(r["numbers"]) == {"x1"}
    assert abs(sum(v["share"] for v in r["modalities"].values()) - 1) < 1e-6
    assert "image" not in rows[1]["maps"] and rows[1]["modalities"]["image"]["share"] == 0
    j = to_json(r, max_side=8)
    assert np.array(j["maps"]["image"]).shape == (8, 8) and isinstance(j["tokens"]["text"][0]["score"], float)
