"""NeighbourHead: k nearest training rows on frozen encoders' pooled outputs (model.head: neighbours)."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_config
from mmfit.config import ConfigError, load_config
from mmfit.models.contract import EncoderOutput
from mmfit.models.heads import NeighbourHead


def _out(x: torch.Tensor) -> EncoderOutput:
    return EncoderOutput(x.unsqueeze(1), torch.ones(len(x), 1, dtype=torch.bool), x)


def _bank(n_per=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = {"a": torch.randn(3, 8, generator=g) * 3, "b": torch.randn(3, 4, generator=g) * 3}
    y = torch.arange(3).repeat_interleave(n_per)
    pooled = {m: c[y] + 0.3 * torch.randn(len(y), c.shape[1], generator=g) for m, c in centres.items()}
    return pooled, y


def test_the_nearest_rows_vote_and_a_missing_modality_adds_nothing():
    pooled, y = _bank()
    ones = {m: torch.ones(len(y)) for m in pooled}
    head = NeighbourHead({"a": 8, "b": 4}, "classification", 3, k=5, temperature=0.1)
    head.fill(pooled, ones, torch.nn.functional.one_hot(y, 3).float())
    assert head.keys.shape == (30, 12) and torch.allclose(head.keys.norm(dim=1), torch.ones(30), atol=1e-5)
    out = head({m: _out(v) for m, v in pooled.items()}, ones)
    assert torch.allclose(out.exp().sum(-1), torch.ones(30), atol=1e-5)  # log-probabilities
    assert (out.argmax(-1) == y).float().mean() == 1.0
    # modality 'b' missing in the query: decided by 'a' alone, as a head on 'a' alone decides
    only_a = NeighbourHead({"a": 8}, "classification", 3, k=5, temperature=0.1)
    only_a.fill({"a": pooled["a"]}, {"a": ones["a"]}, torch.nn.functional.one_hot(y, 3).float())
    half = {"a": torch.ones(30), "b": torch.zeros(30)}
    assert torch.allclose(head({m: _out(v) for m, v in pooled.items()}, half).argmax(-1),
                          only_a({"a": _out(pooled["a"])}, {"a": ones["a"]}).argmax(-1))
    # nothing present: the training rows' average, not an arbitrary row's class
    none = head({m: _out(v) for m, v in pooled.items()}, {m: torch.zeros(30) for m in pooled})
    assert torch.allclose(none.exp(), torch.full((30, 3), 1 / 3), atol=1e-5)


def test_values_are_averaged_for_regression_and_the_stored_rows_load_into_a_fresh_head():
    pooled, y = _bank(seed=1)
    ones = {m: torch.ones(len(y)) for m in pooled}
    head = NeighbourHead({"a": 8, "b": 4}, "regression", 1, k=1, temperature=0.1)
    values = (y.float() * 2 - 1).unsqueeze(1)
    head.fill(pooled, ones, values)
    q = {m: _out(v) for m, v in pooled.items()}
    assert torch.allclose(head(q, ones), values)  # k = 1: each row is its own nearest
    fresh = NeighbourHead({"a": 8, "b": 4}, "regression", 1, k=1, temperature=0.1)
    assert fresh.keys.shape[0] == 0
    fresh.load_state_dict(head.state_dict())  # as many rows as were stored
    assert torch.equal(fresh.keys, head.keys) and torch.allclose(fresh(q, ones), values)


def test_the_head_is_configured_and_checked(tmp_path):
    cfg = load_config(tiny_config(tmp_path / "m.csv", tmp_path, model__head="neighbours",
                                  model__neighbours={"k": 7}))
    assert cfg.model.head == "neighbours" and cfg.model.neighbours.k == 7 and cfg.model.neighbours.temperature is None
    with pytest.raises(ConfigError, match="model.head: 'linear', 'neighbours', 'convex' or 'trees', got 'knn'"):
        load_config(tiny_config(tmp_path / "m.csv", tmp_path, model__head="knn"))
    with pytest.raises(ConfigError, match="model.neighbours: k and max_rows must be >= 1"):
        load_config(tiny_config(tmp_path / "m.csv", tmp_path, model__neighbours={"k": 0}))
