"""`mmfit export`, `quantize --method onnx-int8` and `serve --backend onnx` for runs of every shape:
each subset of the modalities, and tables with only numbers, only categories, or both."""

from __future__ import annotations

import base64
import itertools

import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import make_dataset, tiny_config
from mmfit import api
from mmfit.cli import app
from mmfit.run.layout import EXPORT
from mmfit.run.store import Run

pytest.importorskip("onnxruntime")

FILES = {"image": "image", "audio": "audio", "text": "text"}
TABLES = {"numbers and categories": {"x1": "numeric", "color": "categorical"}, "numbers only": {"x1": "numeric"},
          "categories only": {"color": "categorical"}}
# every modality alone, every pair and all four (the graphs of three are the four's without one, which
# each export's parity check runs: each modality missing in turn)
SHAPES = [(mods, "numbers and categories") for k in (1, 2, 4)
          for mods in itertools.combinations(["image", "audio", "text", "tabular"], k)]
SHAPES += [(("tabular",), "numbers only"), (("text", "tabular"), "numbers only"),
           (("tabular",), "categories only"), (("image", "tabular"), "categories only")]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    return make_dataset(root / "data", n=30), root


def _value(col: str, row: dict, root):
    if col in ("image", "audio"):
        return base64.b64encode((root / row[col]).read_bytes()).decode()
    return row[col]


@pytest.mark.slow
@pytest.mark.parametrize("mods,table", SHAPES, ids=[f"{'+'.join(m)}:{t}" if "tabular" in m else "+".join(m)
                                                    for m, t in SHAPES])
def test_export_quantize_and_serve_onnx(data, tmp_path, mods, table, quiet_console):
    from fastapi.testclient import TestClient

    from mmfit.deploy.server import create_app

    manifest, root = data
    columns = {c: r for c, r in FILES.items() if c in mods}
    if "tabular" in mods:
        columns.update(TABLES[table])
    cfg = tiny_config(manifest, root, data__columns=columns, data__targets={"label": "classification"},
                      data__on_error="skip", train__epochs=1)  # skip: a row whose only input is empty
    run = api.train(cfg, run_dir=tmp_path / "run", console=quiet_console)
    runner = CliRunner()
    r = runner.invoke(app, ["export", str(run)])
    assert r.exit_code == 0, r.output + repr(r.exception)
    assert "parity with PyTorch" in r.output
    assert Run(run).read_json(EXPORT)["max_abs_diff"] < 1e-4
    r = runner.invoke(app, ["quantize", str(run), "--method", "onnx-int8", "-o", str(tmp_path / "int8")])
    assert r.exit_code == 0, r.output + repr(r.exception)
    assert "max abs logit difference" in r.output
    row = pd.read_csv(manifest, dtype=str, keep_default_na=False).iloc[1].to_dict()
    inputs = {c: _value(c, row, manifest.parent) for c in columns if row[c] != ""}
    with TestClient(create_app(tmp_path / "int8", backend="onnx")) as client:
        res = client.post("/predict", json={"inputs": inputs})
    assert res.status_code == 200, res.text
    assert res.json()["label"]["label"] in {"a", "b", "c"}
