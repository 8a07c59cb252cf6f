"""Ensemble selection on hand-made validation outputs, and the combination the ensemble model uses."""

from __future__ import annotations

import numpy as np
import torch

from mmfit.models.ensemble import from_scores, to_scores
from mmfit.recipe.selection import ensemble_selection


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
