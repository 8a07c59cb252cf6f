"""`mmfit pretrain` on a manifest without targets, training from its encoders, exact resume."""

import json

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from conftest import make_dataset, tiny_config


class Stop(Exception):
    pass


def _unlabelled(tmp_path):
    data = make_dataset(tmp_path / "data", n=45)
    df = pd.read_csv(data)
    unlabelled = data.with_name("unlabelled.csv")
    df.drop(columns=["label", "score"]).to_csv(unlabelled, index=False)
    cfg = tiny_config(unlabelled, tmp_path, train__epochs=3)
    cfg["data"]["targets"] = {}
    return data, cfg


def test_pretrain_without_targets_then_train_from_its_encoders(tmp_path, quiet_console):
    import mmfit
    from mmfit.config import ConfigError
    from mmfit.training.loop import _data, _model, _start

    data, cfg = _unlabelled(tmp_path)
    with pytest.raises(ConfigError, match="mmfit pretrain"):
        mmfit.train(cfg, console=quiet_console)  # refused, and told why
    run = mmfit.pretrain(cfg, run_dir=tmp_path / "pre", console=quiet_console)
    hist = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(hist) == 3 and {"mlm/text", "patches/image", "contrastive/image~audio"} <= set(hist[0]["train"])
    assert json.loads((run / "eval" / "val.json").read_text())["pretrain"]["loss"] > 0
    saved = load_file(str(run / "model.safetensors"))

    labelled = tiny_config(data, tmp_path)
    for e in labelled["model"]["encoders"].values():
        e["init"] = str(run)
    s = _start(mmfit.load_config(labelled), tmp_path / "ft", None, quiet_console)
    _data(s, None, None)
    _model(s, None)
    state = s.model.state_dict()
    for m in ("image", "audio", "text", "tabular"):
        names = [k for k in saved if k.startswith(f"encoders.{m}.")]
        assert names
        for k in names:
            assert torch.equal(state[k], saved[k]), k  # every encoder weight, under the same name
    # the scratch text encoder reads text with the pretraining run's vocabulary (same token ids)
    assert (tmp_path / "ft" / "tokenizer-text.json").read_text() == (run / "tokenizer-text.json").read_text()
    ft = mmfit.train(labelled, run_dir=tmp_path / "ft2", console=quiet_console)
    assert json.loads((ft / "eval" / "test.json").read_text())["metrics"]["label"]["n"] > 0


def test_init_from_a_run_without_that_encoder_is_named(tmp_path, quiet_console):
    import mmfit

    data, cfg = _unlabelled(tmp_path)
    cfg["data"]["columns"] = {"image": "image", "text": "text"}
    cfg["train"]["epochs"] = 1
    run = mmfit.pretrain(cfg, run_dir=tmp_path / "pre", console=quiet_console)
    labelled = tiny_config(data, tmp_path)
    labelled["model"]["encoders"]["audio"]["init"] = str(run)
    with pytest.raises(ValueError, match="no encoder for 'audio'"):
        mmfit.train(labelled, run_dir=tmp_path / "ft", console=quiet_console)


def test_pretrain_resumes_exactly(tmp_path, quiet_console):
    from mmfit.config import load_config
    from mmfit.training.pretrain import pretrain

    _, cfg = _unlabelled(tmp_path)
    cfg["train"]["epochs"] = 4
    cfg = load_config(cfg, need_targets=False)
    ref = pretrain(cfg, run_dir=tmp_path / "ref", console=quiet_console)

    def stop(epoch, value):
        if epoch == 1:
            raise Stop

    with pytest.raises(Stop):
        pretrain(cfg, run_dir=tmp_path / "cut", console=quiet_console, on_epoch=stop)
    assert not (tmp_path / "cut" / "eval").exists()
    pretrain(resume=tmp_path / "cut", console=quiet_console)
    a = [json.loads(x) for x in (ref / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in b] == [0, 1, 2, 3]
    for x, y in zip(a, b):
        for k, v in x["train"].items():
            assert abs(v - y["train"][k]) < 1e-4, (x["epoch"], k)
        assert abs(x["val"]["loss"] - y["val"]["loss"]) < 1e-4
