"""The modality ablation is computed in one pass over the data: every variant (all present, each
modality dropped, each alone) gives what a pass of its own gives, and each encoder runs once a batch."""

from __future__ import annotations

import numpy as np

from conftest import tiny_config
from mmfit.config import load_config
from mmfit.data.prepare import prepare_training
from mmfit.evaluation.predict import evaluate_data, metrics_from_predictions, predict_data
from mmfit.models.model import build_model


def test_the_ablation_in_one_pass_equals_a_pass_per_variant_and_runs_each_encoder_once_a_batch(dataset, tmp_path):
    cfg = load_config(tiny_config(dataset, tmp_path))
    pre, splits, _ = prepare_training(cfg, log=lambda *a: None)
    model = build_model(cfg, pre).eval()
    data = splits["train"]
    calls = {m: 0 for m in model.encoders}
    for m, enc in model.encoders.items():  # what the encoder computes (a hook would count the memo's answers too)
        def counted(inputs, m=m, forward=enc.forward):
            calls[m] += 1
            return forward(inputs)
        enc.forward = counted
    got = evaluate_data(model, data, pre, batch_size=16)
    batches = -(-len(data) // 16)
    assert len(model.modalities) >= 3 and all(n == batches for n in calls.values()), (calls, batches)
    mods = model.modalities
    want = {**{f"without_{m}": [m] for m in mods}, **{f"only_{m}": [o for o in mods if o != m] for m in mods}}
    assert set(got["ablation"]) == set(want)
    for name, drop in want.items():
        alone = metrics_from_predictions(predict_data(model, data, pre, 16, drop=drop), pre)
        for task, metrics in alone.items():
            for key, value in metrics.items():
                assert np.allclose(got["ablation"][name][task][key], value), (name, key)
    full = metrics_from_predictions(predict_data(model, data, pre, 16), pre, full=True)
    assert got["metrics"]["label"]["macro_f1"] == full["label"]["macro_f1"]
    assert np.allclose(got["metrics"]["label"]["confusion_matrix"], full["label"]["confusion_matrix"])
