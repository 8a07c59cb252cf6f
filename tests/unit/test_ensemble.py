"""Ensemble selection on hand-made validation outputs, and the combination the ensemble model uses."""

from __future__ import annotations

import numpy as np
import torch

from mmfit.models.ensemble import ensemble_selection, from_scores, to_scores


def _accuracy(y):
    return lambda p: float((p.argmax(1) == y).mean())


def test_a_useless_candidate_gets_no_weight_and_complements_are_combined():
    y = np.array([0, 0, 1, 1, 2, 2])
    right_on_01 = np.array([[.9, .1, 0], [.9, .1, 0], [.1, .9, 0], [.1, .9, 0], [.4, .0, .6], [.6, .0, .4]])
    right_on_2 = np.array([[.5, .5, 0], [.3, .7, 0], [.6, .4, 0], [.5, .5, 0], [0, 0, 1], [0, 0, 1]])
    noise = np.full((6, 3), 1 / 3) + np.array([[.2, -.1, -.1]] * 6)  # always class 0
    w = ensemble_selection({("a", "fused"): right_on_01, ("b", "fused"): right_on_2, ("c", "fused"): noise},
                           _accuracy(y))
    assert w[("c", "fused")] == 0
    assert w[("a", "fused")] > 0 and w[("b", "fused")] > 0
    combined = sum(v * s for v, s in zip(w.values(), (right_on_01, right_on_2, noise)))
    assert _accuracy(y)(combined) == 1.0 > max(_accuracy(y)(right_on_01), _accuracy(y)(right_on_2))
    assert abs(sum(w.values()) - 1) < 1e-12


def test_the_single_best_stays_alone_when_nothing_helps():
    y = np.array([0, 1, 0, 1])
    best = np.array([[.8, .2], [.2, .8], [.8, .2], [.2, .8]])
    worse = np.array([[.2, .8], [.8, .2], [.8, .2], [.2, .8]])
    assert ensemble_selection({("a", "h"): worse, ("b", "h"): best}, _accuracy(y)) == {("a", "h"): 0.0,
                                                                                       ("b", "h"): 1.0}


def test_scores_and_logits_round_trip_per_task_kind():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 0.0, 3.0]])
    for kind in ("classification", "multilabel", "regression"):
        back = from_scores(to_scores(logits, kind), kind)
        again = to_scores(back, kind)
        assert torch.allclose(again, to_scores(logits, kind), atol=1e-5)
    # a weighted average of probabilities, back through softmax, is that average
    p = 0.3 * torch.softmax(logits, -1) + 0.7 * torch.softmax(-logits, -1)
    assert torch.allclose(torch.softmax(from_scores(p, "classification"), -1), p, atol=1e-6)


def test_the_decision_divides_by_the_prior_where_validation_gains_and_not_otherwise():
    from types import SimpleNamespace

    from mmfit.models.ensemble import PRIOR_POWERS, prior_shift, shifted
    from mmfit.optimize.recipe import decide

    def split(y):
        return SimpleNamespace(targets={"t": torch.tensor(y)}, target_mask={"t": torch.ones(len(y), dtype=torch.bool)})

    # a rare class (2) whose probabilities, fitted to the training mix, stay below the frequent ones'
    y_val = np.array([0] * 40 + [1] * 40 + [2] * 10)
    p = np.zeros((90, 3))
    p[:40] = [.7, .2, .1]
    p[40:80] = [.2, .7, .1]
    p[80:] = [.45, .15, .4]  # right class second: argmax says 0
    train = split(np.array([0] * 200 + [1] * 200 + [2] * 20))
    pre = SimpleNamespace(targets={"t": SimpleNamespace(type="classification", classes=["a", "b", "c"])})
    weights = {"t": {("m", "fused"): 1.0}}
    scores = {"m": {"all": {"val": {"t": {"fused": p}}}}}
    d = decide(scores, weights, {"train": train, "val": split(y_val)}, pre)["t"]
    assert d["prior_power"] > 0 and d["validation"][str(d["prior_power"])] > d["validation"]["0.0"]
    assert d["validation"]["0.0"] < 0.7 and d["validation"][str(d["prior_power"])] == 1.0
    assert d["train_counts"] == [200, 200, 20] and set(d["validation"]) == {str(x) for x in PRIOR_POWERS}
    adjusted = shifted(torch.from_numpy(p), d["shift"]).numpy()
    assert (adjusted.argmax(1) == y_val).all() and np.allclose(adjusted.sum(1), 1)
    # the frequent classes' rows decided by plain argmax already: no shift is chosen
    p_easy = p.copy()
    p_easy[80:] = [.1, .1, .8]
    scores["m"]["all"]["val"]["t"]["fused"] = p_easy
    assert decide(scores, weights, {"train": train, "val": split(y_val)}, pre)["t"]["prior_power"] == 0
    # a balanced training set: any power is a constant shift, the probabilities unchanged
    flat = prior_shift([50, 50, 50], 1.0)
    assert np.allclose(shifted(torch.from_numpy(p), flat).numpy(), p, atol=1e-6)


def test_the_ensemble_model_applies_the_recorded_shift():
    from mmfit.models.ensemble import EnsembleModel, shifted
    from mmfit.models.model import ModelOutput

    class Fixed(torch.nn.Module):
        def __init__(self, logits):
            super().__init__()
            self.logits, self.encoders, self.modalities = logits, torch.nn.ModuleDict(), []

        def forward(self, inputs, present):
            return ModelOutput({"t": self.logits}, {}, None, {})

    logits = torch.tensor([[2.0, 1.5, 0.0], [0.3, 0.0, 0.2]])
    shift = [0.0, 0.0, 1.0]
    model = EnsembleModel({"m": Fixed(logits)}, {"t": {("m", "fused"): 1.0}}, {"t": "classification"}, "t",
                          shifts={"t": shift})
    got = torch.softmax(model({}, {}).logits["t"], -1)
    assert torch.allclose(got, shifted(torch.softmax(logits, -1), shift), atol=1e-6)
    assert got.argmax(1).tolist() == [0, 2]
