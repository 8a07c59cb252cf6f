"""End to end: strategies save and reload, merge predicts the same without peft, augmentation only
at train time and reproducible, augment-preview draws."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from conftest import tiny_config
from mmfit import Predictor, api
from mmfit.cli import app
from mmfit.data.augment import Augmenter

MIXED = {"text": {"strategy": "lora", "r": 4}, "image": "ia3", "audio": "bitfit", "tabular": "frozen"}
MIXED2 = {"text": {"strategy": "partial", "layers": 1}, "image": "lora", "audio": "full", "tabular": "ia3"}
AUGMENT = {"image": {"crop": 0.7, "rotate": 10, "hflip": 0.5, "jitter": 0.2, "noise": 0.02, "blur": 0.3},
           "audio": {"gain_db": 6, "snr_db": 20, "shift": 0.1, "time_masks": 1, "freq_masks": 1},
           "text": {"token_dropout": 0.1, "swap": 0.1, "deletion": 0.1}, "tabular": {"jitter": 0.1}, "mixup": 0.4}


def _cfg(dataset, tmp_path, finetune=None, augment=None, **kw):
    cfg = tiny_config(dataset, tmp_path, **kw)
    for k, v in (finetune or {}).items():
        cfg["model"]["encoders"][k]["finetune"] = v
    if augment:
        cfg["augment"] = augment
    return cfg


@pytest.mark.parametrize("mix", [MIXED, MIXED2], ids=["lora-ia3-bitfit-frozen", "partial-lora-full-ia3"])
def test_mixed_strategies_save_adapters_and_reload_identically(dataset, tmp_path, quiet_console, mix):
    run = api.train(_cfg(dataset, tmp_path, mix), console=quiet_console)
    params = json.loads((run / "params.json").read_text())
    for m, v in mix.items():
        assert params[m]["strategy"] == (v if isinstance(v, str) else v["strategy"])
        if params[m]["strategy"] == "frozen":
            assert params[m]["trainable"] == 0
        elif params[m]["strategy"] == "full":
            assert params[m]["trainable"] == params[m]["params"]
        else:
            assert 0 < params[m]["trainable"] < params[m]["params"]
    assert params["fusion+heads"]["trainable"] == params["fusion+heads"]["params"]  # heads always train
    adapted = {m: (v if isinstance(v, str) else v["strategy"]) for m, v in mix.items()}
    adapted = {m: s for m, s in adapted.items() if s in ("lora", "ia3")}
    assert sorted(p.name for p in (run / "adapters").iterdir()) == sorted(adapted)
    for m, s in adapted.items():
        conf = json.loads((run / "adapters" / m / "adapter_config.json").read_text())
        assert conf["peft_type"] == s.upper()
        adapter = load_file(str(run / "adapters" / m / "adapter_model.safetensors"))
        assert adapter and all(f"{s}_" in k for k in adapter)
    # the heads and the fusion are in model.safetensors, next to the adapters
    weights = load_file(str(run / "model.safetensors"))
    assert any(k.startswith("heads.label") for k in weights) and any(k.startswith("fusion.") for k in weights)
    # reloaded from the run directory, the model scores exactly what training measured
    saved = json.loads((run / "eval" / "test.json").read_text())["metrics"]["label"]
    again = api.evaluate(run, "test", console=quiet_console)["metrics"]["label"]
    assert again["macro_f1"] == pytest.approx(saved["macro_f1"], abs=1e-9)
    assert again["accuracy"] == pytest.approx(saved["accuracy"], abs=1e-9)


def test_frozen_encoder_does_not_change(dataset, tmp_path, quiet_console):
    from mmfit.config import load_config
    from mmfit.data.prepare import prepare_training
    from mmfit.models.model import build_model
    from mmfit.training.loop import seed_everything

    raw = _cfg(dataset, tmp_path, {"image": "frozen"})
    run = api.train(raw, console=quiet_console)
    cfg = load_config(raw)
    pre, _, _ = prepare_training(cfg, log=lambda *a: None)
    seed_everything(cfg.train.seed)
    fresh = build_model(cfg, pre)  # the same seeded initialisation the run started from
    trained = load_file(str(run / "model.safetensors"))
    for k, v in fresh.state_dict().items():
        if k.startswith("encoders.image."):
            assert torch.equal(trained[k], v), k
    fresh.train()
    assert not fresh.encoders["image"].training and fresh.encoders["text"].training


def test_merge_predicts_the_same_and_loads_without_peft(dataset, tmp_path):
    cfg = _cfg(dataset, tmp_path, {"text": "lora", "image": "lora", "audio": "ia3", "tabular": "lora"})
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    runner = CliRunner()
    r = runner.invoke(app, ["train", str(cfg_path), "--output", str(run)])
    assert r.exit_code == 0, r.output
    # give the adapters weight, so that a merge that dropped them would show
    r = runner.invoke(app, ["merge", str(run), "-o", str(tmp_path / "merged")])
    assert r.exit_code == 0, r.output
    assert "max abs difference" in r.output
    rep = json.loads((tmp_path / "merged" / "merge.json").read_text())
    assert rep["max_abs_diff_logits"] <= 1e-4
    assert set(rep["merged_layers"]) == {"text", "image", "audio", "tabular"}
    merged_cfg = yaml.safe_load((tmp_path / "merged" / "config.yaml").read_text())
    assert all(e["finetune"]["strategy"] == "full" for e in merged_cfg["model"]["encoders"].values())
    assert not any("lora_" in k or "ia3_" in k for k in load_file(str(tmp_path / "merged" / "model.safetensors")))

    original = Predictor.load(run).predict(dataset)
    out = tmp_path / "merged_pred.csv"
    script = f"""
import sys
class NoPeft:
    def find_spec(self, name, path=None, target=None):
        if name == "peft" or name.startswith("peft."):
            raise ImportError("peft is not installed")
sys.meta_path.insert(0, NoPeft())
from mmfit import Predictor
Predictor.load({str(tmp_path / 'merged')!r}).predict({str(dataset)!r}).to_csv({str(out)!r}, index=False)
assert "peft" not in sys.modules
"""
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    import pandas as pd

    merged = pd.read_csv(out)
    probs = [c for c in original.columns if "_prob_" in c]
    assert np.abs(original[probs].to_numpy() - merged[probs].to_numpy()).max() <= 1e-4
    assert (original["label"] == merged["label"]).all()
    # a run without adapters has nothing to merge: a clear error
    r = runner.invoke(app, ["merge", str(tmp_path / "merged")])
    assert r.exit_code != 0


def test_augmentation_runs_only_at_train_time(dataset, tmp_path, quiet_console, monkeypatch):
    calls = []
    real = Augmenter.__call__

    def counting(self, batch, gen):
        calls.append(batch.size)
        return real(self, batch, gen)

    monkeypatch.setattr(Augmenter, "__call__", counting)
    run = api.train(_cfg(dataset, tmp_path, augment=AUGMENT), console=quiet_console)
    n_train_rows = sum(calls)
    epochs = len((run / "metrics.jsonl").read_text().splitlines())
    assert calls and n_train_rows % epochs == 0  # every training batch, every epoch
    before = len(calls)
    Predictor.load(run).predict(dataset)
    api.evaluate(run, "test", console=quiet_console)
    assert len(calls) == before  # prediction and evaluation never augment


def test_augmented_training_is_reproducible(dataset, tmp_path, quiet_console):
    losses = []
    for k in range(2):
        cfg = _cfg(dataset, tmp_path, augment=AUGMENT)
        run = api.train(cfg, run_dir=tmp_path / f"r{k}", console=quiet_console)
        losses.append([json.loads(ln)["train"] for ln in (run / "metrics.jsonl").read_text().splitlines()])
    assert losses[0] == losses[1]
    plain = api.train(_cfg(dataset, tmp_path), run_dir=tmp_path / "plain", console=quiet_console)
    plain_losses = [json.loads(ln)["train"] for ln in (plain / "metrics.jsonl").read_text().splitlines()]
    assert plain_losses != losses[0]  # and the augmentation did something


def test_augment_preview_cli(dataset, tmp_path):
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(_cfg(dataset, tmp_path, augment=AUGMENT)))
    out = tmp_path / "preview.png"
    r = CliRunner().invoke(app, ["augment-preview", str(cfg_path), "-o", str(out), "--n", "4"])
    assert r.exit_code == 0, r.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "[text]" in r.output and "augment 1" in r.output
    from PIL import Image

    w, h = Image.open(out).size
    assert w > 200 and h > 200
