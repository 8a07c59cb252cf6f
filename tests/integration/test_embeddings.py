"""Frozen encoders run once: their outputs are cached across epochs and runs, and a model trained on
the cached outputs predicts exactly as the same model running its encoders."""

from __future__ import annotations

import io

from rich.console import Console

from conftest import tiny_config
from mmfit import api
from mmfit.run.store import Run


def _cfg(dataset, tmp_path, **extra):
    cfg = tiny_config(dataset, tmp_path, train__epochs=3, **extra)
    for m in ("image", "text"):
        cfg["model"]["encoders"][m]["finetune"] = "frozen"
    cfg["model"]["encoders"]["audio"] = {"name": "audio-stats"}  # no weights: frozen by nature
    return cfg


def _train(cfg, run_dir) -> tuple:
    buf = io.StringIO()
    run = api.train(cfg, run_dir=run_dir, console=Console(file=buf, width=200))
    return run, buf.getvalue()


def test_frozen_outputs_are_computed_once_and_reused_by_a_second_run_on_another_split(dataset, tmp_path):
    run, log = _train(_cfg(dataset, tmp_path), tmp_path / "a")
    for m in ("image", "text", "audio"):
        assert f"{m}: frozen encoder's outputs for 60 rows, 60 computed (0 from the cache)" in log, log
    assert "tabular: frozen" not in log  # a trained encoder is not cached
    other_split = _cfg(dataset, tmp_path)
    other_split["data"]["split"]["seed"] = 7  # other rows in each split: the outputs are kept per manifest rows
    _, log2 = _train(other_split, tmp_path / "b")
    for m in ("image", "audio"):
        assert f"{m}: frozen encoder's outputs for 60 rows, 0 computed (60 from the cache)" in log2, log2
    # the from-scratch text encoder reads a vocabulary learned on the training split: new ids, new outputs
    assert "text: frozen encoder's outputs for 60 rows, 60 computed" in log2
    _, log3 = _train(_cfg(dataset, tmp_path), tmp_path / "c")
    assert "text: frozen encoder's outputs for 60 rows, 0 computed (60 from the cache)" in log3
    # the model trained on cached outputs predicts the same when it runs its own encoders
    cached = Run(run).evaluation("test")["metrics"]["label"]
    live = api.evaluate(run, console=Console(quiet=True))["metrics"]["label"]
    assert abs(cached["macro_f1"] - live["macro_f1"]) < 1e-9 and abs(cached["auroc"] - live["auroc"]) < 1e-6


def test_augmented_or_trained_encoders_are_not_cached_and_attention_keeps_tokens(dataset, tmp_path):
    cfg = _cfg(dataset, tmp_path, model__fusion="attention")
    cfg["augment"] = {"image": {"hflip": 0.5}}
    run, log = _train(cfg, tmp_path / "a")
    assert "image: frozen" not in log and "text: frozen encoder's outputs" in log
    assert (tmp_path / "cache" / "embedding-tokens").is_dir()  # attention fusion reads the tokens
    cached = Run(run).evaluation("test")["metrics"]["label"]["macro_f1"]
    assert abs(cached - api.evaluate(run, console=Console(quiet=True))["metrics"]["label"]["macro_f1"]) < 1e-9


def test_ranks_compute_their_share_of_the_frozen_outputs_then_every_rank_reads_them_all(dataset, tmp_path):
    """DDP and Ray Train ranks each compute their blocks of the frozen encoders' outputs into the cache
    (training/loop.py); a second call reads them all and gives what one process computes alone."""
    import numpy as np

    from mmfit.config import load_config
    from mmfit.data.cache import FeatureCache
    from mmfit.data.prepare import prepare_training
    from mmfit.models.model import build_model
    from mmfit.training.embeddings import cache_outputs, cached_modalities

    cfg = load_config(_cfg(dataset, tmp_path, data__shard_rows=16))  # 60 rows: 4 blocks a modality
    pre, splits, _ = prepare_training(cfg, log=lambda *_: None)
    model = build_model(cfg, pre)
    frozen = cached_modalities(model, lambda m: False)
    assert sorted(frozen) == ["audio", "image", "text"]
    raw = {m: dict(splits["train"].inputs[m]) for m in frozen}
    shared = FeatureCache(tmp_path / "shared")
    reports = [cache_outputs(model, splits, frozen, shared, 16, False, "cpu", share=(r, 2)) for r in (0, 1)]
    for m in frozen:
        assert splits["train"].inputs[m].keys() == raw[m].keys()  # a share leaves the splits as they were
        assert reports[0][m]["computed"] == 32 and reports[1][m]["computed"] == 28  # blocks 0, 2 and 1, 3
    logged: list[str] = []
    cache_outputs(model, splits, frozen, shared, 16, False, "cpu", log=logged.append)
    assert all("60 rows, 0 computed (60 from the cache)" in line for line in logged) and len(logged) == 3, logged
    _, alone, _ = prepare_training(cfg, log=lambda *_: None)
    cache_outputs(model, alone, frozen, FeatureCache(tmp_path / "alone"), 16, False, "cpu", log=lambda *_: None)
    for split in ("train", "val", "test"):
        for m in frozen:
            a, b = splits[split].inputs[m]["pooled"], alone[split].inputs[m]["pooled"]
            assert np.array_equal(a[np.arange(len(a))], b[np.arange(len(b))])
