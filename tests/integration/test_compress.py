"""prune / quantize / distill / export on a tiny trained run: new run directories that load back
from disk, really smaller where they claim to be, and predict like their source."""

import json

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from conftest import make_dataset, tiny_config
from mmfit import Predictor, api
from mmfit.cli import app

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from rich.console import Console

    tmp = tmp_path_factory.mktemp("compress")
    manifest = make_dataset(tmp / "data")
    cfg = tiny_config(manifest, tmp, model__fusion="attention", train__epochs=3)
    run = api.train(cfg, run_dir=tmp / "run", console=Console(quiet=True))
    return run, manifest, tmp


def _record(run):
    return json.loads((run / "compression.json").read_text())["steps"][-1]


def _probs(pred, manifest):
    df = pred.predict(manifest)
    return df[[c for c in df.columns if "_prob_" in c] + ["score"]].to_numpy(float)


def test_export_onnx_parity_with_and_without_modalities(trained):
    run, manifest, _ = trained
    r = CliRunner().invoke(app, ["export", str(run)])
    assert r.exit_code == 0, r.output
    rep = json.loads((run / "export.json").read_text())
    assert set(rep["max_abs_diff_logits"]) == {"all present", "without image", "without audio", "without text",
                                               "without tabular"}
    assert rep["max_abs_diff"] <= 1e-4
    assert "image.present" in rep["inputs"] and "text.input_ids" in rep["inputs"]
    torch_pred, onnx_pred = Predictor.load(run), Predictor.load(run, backend="onnx")
    # dynamic batch: 60 rows in batches of 64, then of 7
    assert np.abs(_probs(torch_pred, manifest) - _probs(onnx_pred, manifest)).max() <= 1e-4
    a = torch_pred.predict(manifest, batch_size=7)
    b = onnx_pred.predict(manifest, batch_size=7)
    assert (a["label"] == b["label"]).all()
    ev = onnx_pred.evaluate(manifest)  # the ablation runs through the same graph
    assert "without_image" in ev["ablation"]


def test_dynamic_int8_is_smaller_and_loads_back_exactly(trained):
    run, manifest, tmp = trained
    rec = api.quantize(run, "dynamic-int8", tmp / "int8")
    step = rec["steps"][-1]
    assert step["max_abs_diff_reload"] == 0.0
    assert step["size_mb"] < step["size_mb_before"]
    assert step["quantized"]["linear"] > 0 and step["quantized"]["embedding"] > 0
    pred = Predictor.load(tmp / "int8")
    from torch.ao.nn.quantized.dynamic import Linear as QLinear

    assert any(isinstance(m, QLinear) for m in pred.model.modules())
    src = _probs(Predictor.load(run), manifest)
    assert np.abs(_probs(pred, manifest) - src).max() < 0.1  # close to fp32, not identical
    with pytest.raises(ValueError, match="already quantized"):
        api.quantize(tmp / "int8", "bf16", tmp / "again")


@pytest.mark.parametrize("method", ["fp16", "bf16"])
def test_half_precision_halves_the_file(trained, method):
    run, manifest, tmp = trained
    step = api.quantize(run, method, tmp / method)["steps"][-1]
    assert step["size_mb"] < 0.6 * step["size_mb_before"]
    pred = Predictor.load(tmp / method)
    assert pred.precision == ("bf16" if method == "bf16" else "fp32")
    assert step["max_abs_diff_logits"] < 0.2
    assert len(pred.predict(manifest)) == 60


def test_onnx_int8_quantizes_the_graph(trained):
    import onnx

    run, manifest, tmp = trained
    step = api.quantize(run, "onnx-int8", tmp / "onnx8")["steps"][-1]
    assert step["backend"] == "onnx" and step["quantized"]["conv_weight_only"] > 0
    ops = {n.op_type for n in onnx.load(str(tmp / "onnx8" / "model.onnx")).graph.node}
    assert "DynamicQuantizeLinear" in ops and "DequantizeLinear" in ops
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        Predictor.load(tmp / "onnx8")  # an ONNX-only run says what is missing
    assert len(Predictor.load(tmp / "onnx8", backend="onnx").predict(manifest)) == 60


def test_onnx_int8_quantizes_the_current_export_and_traces_again_when_the_weights_changed(trained, tmp_path):
    """quantize --method onnx-int8 takes the run's model.onnx where `mmfit export` traced it from the
    same weights (the same graph it would trace), and traces again once the weights differ."""
    import shutil

    from safetensors.torch import load_file, save_file

    run, manifest, _ = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    api.export(copy)
    reused = api.quantize(copy, "onnx-int8", tmp_path / "reused")["steps"][-1]
    assert reused["graph"].startswith("the run's model.onnx")
    (copy / "export.json").unlink()  # no record of the export: traced again, the same graph
    traced = api.quantize(copy, "onnx-int8", tmp_path / "traced")["steps"][-1]
    assert traced["graph"] == "traced now"
    assert traced["max_abs_diff_logits"] == reused["max_abs_diff_logits"]
    api.export(copy)
    weights = load_file(str(copy / "model.safetensors"))
    weights["heads.label.net.1.weight"].zero_()  # every row's label logits: the bias alone
    save_file(weights, str(copy / "model.safetensors"), metadata={"format": "pt"})
    assert api.quantize(copy, "onnx-int8", tmp_path / "changed")["steps"][-1]["graph"] == "traced now"

    def label_probs(pred):
        df = pred.predict(manifest)
        return df[[c for c in df.columns if c.startswith("label_prob_")]].to_numpy(float)

    now = label_probs(Predictor.load(copy))  # the changed weights, in PyTorch: one row of probabilities
    assert np.abs(now - now[0]).max() < 1e-6
    assert np.abs(label_probs(Predictor.load(tmp_path / "changed", backend="onnx")) - now).max() < 1e-4
    assert np.abs(label_probs(Predictor.load(tmp_path / "reused", backend="onnx")) - now).max() > 0.05  # the old graph


def test_structured_prune_with_recovery_has_fewer_parameters(trained):
    run, manifest, tmp = trained
    r = CliRunner().invoke(app, ["prune", str(run), "--sparsity", "0.5", "--method", "structured",
                                 "--finetune-epochs", "1", "-o", str(tmp / "pruned")])
    assert r.exit_code == 0, r.output
    step = _record(tmp / "pruned")
    assert step["params"] < step["params_before"]
    assert step["removed"]["ffn_neurons"]["removed"] > 0
    pred = Predictor.load(tmp / "pruned")
    assert sum(p.numel() for p in pred.model.parameters()) == step["params"]
    assert (tmp / "pruned" / "eval" / "test.json").exists()  # the recovery run evaluated itself
    assert len(pred.predict(manifest)) == 60
    # a pruned run is a run: it resumes (one more epoch, into the smaller layers) and exports like one
    cfg = yaml.safe_load((tmp / "pruned" / "config.yaml").read_text())
    cfg["train"]["epochs"] = 2
    (tmp / "pruned" / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    r = CliRunner().invoke(app, ["train", "--resume", str(tmp / "pruned")])
    assert r.exit_code == 0, r.output
    assert len((tmp / "pruned" / "metrics.jsonl").read_text().splitlines()) == 2
    assert sum(p.numel() for p in Predictor.load(tmp / "pruned").model.parameters()) == step["params"]
    assert api.export(tmp / "pruned")["max_abs_diff"] <= 1e-4


def test_magnitude_prune_keeps_zeros_through_recovery(trained):
    run, _, tmp = trained
    rec = api.prune(run, 0.6, "magnitude", finetune_epochs=1, output=tmp / "mag")
    step = rec["steps"][-1]
    assert step["params"] == step["params_before"]
    pruned = step["removed"]["pruned_weights"]
    assert step["nonzero_before"] - step["nonzero"] >= pruned  # recovery training kept them at zero


def test_distill_trains_a_smaller_student(trained):
    run, manifest, tmp = trained
    student = {"model": {"dim": 8, "encoders": {k: {"name": "scratch", "layers": 1, "heads": 2, "patch": 4}
                                                for k in ("image", "audio", "text", "tabular")}},
               "train": {"epochs": 2, "batch_size": 8, "output_dir": str(tmp / "students")},
               "distill": {"temperature": 3.0, "alpha": 0.5, "feature_weight": 1.0}}
    path = tmp / "student.yaml"
    path.write_text(yaml.safe_dump(student))
    rec = api.distill(run, path, run_dir=tmp / "student")
    step = rec["steps"][-1]
    assert step["params"] < step["params_before"] and step["teacher"] == str(run)
    lines = [json.loads(x) for x in (tmp / "student" / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["train"]["distill/kd"] > 0 and "distill/feature" in lines[0]["train"]
    assert len(Predictor.load(tmp / "student").predict(manifest)) == 60
    # a student for other tasks is refused, naming them
    bad = dict(student, data={**yaml.safe_load((run / "config.yaml").read_text())["data"],
                              "targets": {"label": "classification"}})
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ValueError, match="tasks must be the same"):
        api.distill(run, path, run_dir=tmp / "student2")


def test_sample_batch_falls_back_to_random_inputs(trained, tmp_path):
    run, _, _ = trained
    pred = Predictor.load(run)
    pred.cfg.data.manifest = str(tmp_path / "gone.csv")
    batch, what = pred.sample_batch(n=4)
    assert "random" in what and batch.size == 4
    pred.model(batch.inputs, batch.present)


def test_lora_run_exports_and_teaches(trained):
    pytest.importorskip("peft")
    from rich.console import Console

    _, manifest, tmp = trained
    cfg = tiny_config(manifest, tmp, train__epochs=1)
    for m in ("text", "image"):
        cfg["model"]["encoders"][m]["finetune"] = "lora"
    lora = api.train(cfg, run_dir=tmp / "lora", console=Console(quiet=True))
    assert api.export(lora)["max_abs_diff"] <= 1e-4  # adapters are in the graph
    student = {"model": {"dim": 8, "encoders": {k: "scratch" for k in ("image", "audio", "text", "tabular")}},
               "train": {"epochs": 1, "batch_size": 8}}
    path = tmp / "student-lora.yaml"
    path.write_text(yaml.safe_dump(student))
    step = api.distill(lora, path, run_dir=tmp / "student-of-lora")["steps"][-1]
    assert step["params"] < step["params_before"]


def _tiny_bert(d):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    d.mkdir()
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "red", "round", "small", "blue", "square", "large",
             "green", "spiky", "tiny", "sample", "unused", "other", "##s"]
    BertTokenizerFast(vocab={w: i for i, w in enumerate(words)}).save_pretrained(str(d))
    BertModel(BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=32)).save_pretrained(str(d))
    return d


def test_smaller_pretrained_student_keeps_layers_and_trims_vocabulary(trained):
    """keep_layers + trim_vocab: a Hugging Face text encoder cut to its first layers and to the
    training data's tokens trains, reloads from its run directory and exports."""
    from rich.console import Console

    _, manifest, tmp = trained
    d = _tiny_bert(tmp / "bert")
    cfg = tiny_config(manifest, tmp, train__epochs=1)
    cfg["model"]["encoders"]["text"] = {"name": "hf", "path": str(d), "keep_layers": 1, "trim_vocab": True}
    run = api.train(cfg, run_dir=tmp / "small-bert", console=Console(quiet=True))
    pred = Predictor.load(run)
    bert = pred.model.encoders["text"].model
    assert len(bert.encoder.layer) == 1
    # the 5 special tokens and the 10 words of the generated texts; 'unused', 'other', '##s' go
    assert bert.get_input_embeddings().num_embeddings == 15
    assert len(pred.predict(manifest)) == 60
    assert api.export(run)["max_abs_diff"] <= 1e-4
    with pytest.raises(Exception, match="keep_layers, embed_rank and trim_vocab apply"):
        bad = tiny_config(manifest, tmp)
        bad["model"]["encoders"]["image"]["trim_vocab"] = True
        api.train(bad, run_dir=tmp / "bad", console=Console(quiet=True))


def test_factorised_embedding_student_keeps_every_token(trained):
    """embed_rank: the token table becomes [vocab, r] @ [r, dim], started from its SVD; the run
    reloads, exports and quantizes, and tokens unseen in training keep their own vectors."""
    from rich.console import Console

    from mmfit.models.encoders.hf import FactorizedEmbedding

    _, manifest, tmp = trained
    d = _tiny_bert(tmp / "bert-r")
    cfg = tiny_config(manifest, tmp, train__epochs=1)
    cfg["model"]["encoders"]["text"] = {"name": "hf", "path": str(d), "embed_rank": 4}
    run = api.train(cfg, run_dir=tmp / "factorised", console=Console(quiet=True))
    pred = Predictor.load(run)
    emb = pred.model.encoders["text"].model.get_input_embeddings()
    assert isinstance(emb, FactorizedEmbedding) and emb.num_embeddings == 18 and emb.low.weight.shape == (18, 4)
    assert not torch.equal(emb(torch.tensor([15])), emb(torch.tensor([16])))  # 'unused' != 'other'
    assert len(pred.predict(manifest)) == 60
    assert api.export(run)["max_abs_diff"] <= 1e-4
    q = api.quantize(run, "dynamic-int8", tmp / "factorised-int8", console=Console(quiet=True))
    assert len(Predictor.load(q["output"]).predict(manifest)) == 60
    with pytest.raises(Exception, match="not combined with trim_vocab"):
        cfg["model"]["encoders"]["text"]["trim_vocab"] = True
        api.train(cfg, run_dir=tmp / "bad-r", console=Console(quiet=True))
