"""Retrieval metrics against hand-made similarity matrices; the matching task's config checks."""

import numpy as np
import pytest

from conftest import tiny_config
from mmfit.config import ConfigError, load_config
from mmfit.deploy.predictor import match_scores, top_k
from mmfit.evaluation.metrics import ranks, retrieval_metrics


def _pairs(sim: np.ndarray) -> np.ndarray:
    """[N, 2, N] with a = identity and b's rows = sim's columns, so a_i . b_j = sim[i, j] (not unit
    vectors: the metrics read only the products)."""
    n = len(sim)
    a = np.eye(n)
    b = sim.T.copy()
    return np.stack([a, b], 1)


def test_ranks_of_a_hand_made_matrix():
    sim = np.array([[0.9, 0.1, 0.2],   # query 0: partner first
                    [0.8, 0.5, 0.1],   # query 1: partner second
                    [0.7, 0.6, 0.3]])  # query 2: partner last
    assert ranks(sim).tolist() == [1, 2, 3]
    assert ranks(np.ones((3, 3))).tolist() == [3, 3, 3]  # ties count against the partner


def test_retrieval_metrics_match_hand_computation():
    sim = np.array([[0.9, 0.1, 0.2],
                    [0.8, 0.5, 0.1],
                    [0.7, 0.6, 0.3]])
    m = retrieval_metrics(_pairs(sim), full=True, sides=("scan", "report"))
    fwd = m["directions"]["scan->report"]
    assert fwd["recall@1"] == pytest.approx(1 / 3)
    assert fwd["recall@5"] == 1.0
    assert fwd["median_rank"] == 2.0
    assert fwd["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)
    back = m["directions"]["report->scan"]  # columns: report j's scores over the scans
    assert ranks(sim.T).tolist() == [1, 2, 1]
    assert back["recall@1"] == pytest.approx(2 / 3)
    assert m["recall@1"] == pytest.approx((1 / 3 + 2 / 3) / 2)
    assert m["chance_recall@1"] == pytest.approx(1 / 3)


def test_perfect_and_reversed_retrieval():
    n = 12
    perfect = retrieval_metrics(np.stack([np.eye(n), np.eye(n)], 1))
    assert perfect["recall@1"] == 1.0 and perfect["median_rank"] == 1.0 and perfect["mrr"] == 1.0
    worst = retrieval_metrics(np.stack([np.eye(n), 1 - np.eye(n)], 1))
    assert worst["recall@10"] == 0.0 and worst["median_rank"] == n


def test_top_k_and_match_scores():
    g = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    q = np.array([[0.0, 1.0]])
    hits = top_k(q, g, 2)
    assert hits["gallery"].tolist() == [1, 2] and hits["rank"].tolist() == [1, 2]
    assert hits["score"].tolist() == pytest.approx([1.0, 0.8])
    out = np.stack([g, g[[1, 0, 2]]], 1)
    assert match_scores(out).tolist() == pytest.approx([0.0, 0.0, 1.0])


def test_matching_needs_two_input_columns(tmp_path):
    cfg = tiny_config(tmp_path / "m.csv", tmp_path)
    cfg["data"]["targets"] = {"pair": {"type": "matching", "between": ["image", "nope"]}}
    with pytest.raises(ConfigError, match="between"):
        load_config(cfg)
    cfg["data"]["targets"] = {"pair": {"type": "matching", "between": ["image", "image"]}}
    with pytest.raises(ConfigError, match="two different"):
        load_config(cfg)
    cfg["data"]["targets"] = {"pair": {"type": "matching", "between": ["image", "text"]}}
    assert load_config(cfg).data.targets["pair"].between == ["image", "text"]
