"""The self-supervised objectives (models/pretrain.py): each lowers its loss on a tiny batch; the
masks do what they say; the token grid is found for conv stems."""

import math

import pytest
import torch

from conftest import make_dataset, tiny_config
from mmfit.config import load_config
from mmfit.data.prepare import prepare_training
from mmfit.models.model import build_encoders
from mmfit.evaluation.metrics import monitor_key
from mmfit.models.pretrain import (Pretrainer, hide_patches, info_nce, mask_tokens, patch_mask, patch_targets,
                                   pretrain_losses, token_grid)
from mmfit.training.pretrain import pretraining_config


def _setup(tmp_path, **extra):
    data = make_dataset(tmp_path / "data", n=24)
    cfg = tiny_config(data, tmp_path, **extra)
    for e in cfg["model"]["encoders"].values():
        e["dropout"] = 0.0  # the same masks give the same loss: the test measures optimisation alone
    cfg = pretraining_config(load_config(cfg))
    pre, splits, _ = prepare_training(cfg, log=lambda *a: None)
    torch.manual_seed(0)
    model = Pretrainer(build_encoders(cfg, pre), cfg, pre)
    return model, next(splits["train"].batches(16))


def test_each_objective_lowers_its_loss_on_a_tiny_batch(tmp_path):
    model, batch = _setup(tmp_path)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def terms():
        return model(batch.inputs, batch.present, torch.Generator().manual_seed(1))  # the same masks each step

    model.train()
    first = {k: float(v) for k, v in terms().items()}
    assert {"mlm/text", "patches/image", "patches/audio", "contrastive/image~text", "contrastive/audio~tabular"} <= set(first)
    for _ in range(60):
        t = terms()
        opt.zero_grad()
        t["total"].backward()
        opt.step()
    last = {k: float(v) for k, v in terms().items()}
    for k in first:
        assert last[k] < 0.8 * first[k], (k, first[k], last[k])


def test_objective_weights_turn_terms_off(tmp_path):
    model, batch = _setup(tmp_path, pretrain={"mlm": 0.0, "contrastive": 0.0})
    out = model(batch.inputs, batch.present, torch.Generator().manual_seed(0))
    assert set(out) == {"patches/image", "patches/audio", "total"}
    assert model.objectives() == ["masked patch modelling (audio)", "masked patch modelling (image)"]


def test_the_stopping_figure_is_scale_free(tmp_path):
    """A pretraining run keeps its weights on the weighted mean of each term's log: halving a small
    term counts as much as halving a large one, which the plain total would drown."""
    data = make_dataset(tmp_path / "data", n=24)
    cfg = pretraining_config(load_config(tiny_config(data, tmp_path, pretrain={"mlm": 2.0})))
    pre, splits, _ = prepare_training(cfg, log=lambda *a: None)
    model = Pretrainer(build_encoders(cfg, pre), cfg, pre)
    out = pretrain_losses(model, splits["train"], 8, "cpu", seed=0)
    terms = {k: v for k, v in out.items() if k not in ("loss", "log_loss")}
    w = {k: 2.0 if k.startswith("mlm/") else 1.0 for k in terms}
    expect = sum(w[k] * math.log(v) for k, v in terms.items()) / sum(w.values())
    assert out["log_loss"] == pytest.approx(expect)
    assert out["loss"] == pytest.approx(sum(w[k] * v for k, v in terms.items()), rel=1e-4)
    assert monitor_key(cfg) == ("log_loss", "min")
    named = load_config(tiny_config(data, tmp_path, train={"monitor": "contrastive/image~text"}))
    assert monitor_key(pretraining_config(named)) == ("contrastive/image~text", "min")  # a term, lower is better
    task = load_config(tiny_config(data, tmp_path, train={"monitor": "label/macro_f1"}))
    assert pretraining_config(task).train.monitor == "log_loss"  # a task's metric has no meaning here


def test_bert_masking_leaves_specials_and_padding_alone():
    g = torch.Generator().manual_seed(0)
    ids = torch.tensor([[2, 10, 11, 12, 13, 0, 0], [2, 14, 0, 0, 0, 0, 0]])
    att = ids != 0
    out, labels = mask_tokens(ids, att, special=[0, 1, 2, 3, 4], mask_id=4, vocab=20, ratio=0.5, gen=g)
    assert (labels[:, 0] == -100).all() and (labels[~att] == -100).all()
    assert (labels[1, 1] == 14)  # a one-word text still gets its word masked
    changed = labels != -100
    assert ((out == ids) | changed).all()  # only chosen positions change
    assert (labels[changed] == ids[changed]).all()


def test_patch_masking_hides_the_chosen_cells_only():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 8, 8)
    m = patch_mask(2, (2, 2), 0.5, g)
    assert m.sum(1).tolist() == [2, 2]
    h = hide_patches(x, m, (2, 2))
    cells = m.view(2, 2, 2)
    for b in range(2):
        for r in range(2):
            for c in range(2):
                block, orig = h[b, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4], x[b, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4]
                assert torch.equal(block, orig) != bool(cells[b, r, c])
    t = patch_targets(x, (2, 2))
    assert t.shape == (2, 4, 3 * 16)
    assert torch.allclose(t.mean(-1), torch.zeros(2, 4), atol=1e-5)


@pytest.mark.parametrize("n,h,w,grid", [(16, 32, 32, (4, 4)), (49, 224, 224, (7, 7)), (8 * 13, 64, 100, (8, 13)),
                                        (197, 224, 224, None), (1, 32, 32, None)])
def test_token_grid(n, h, w, grid):
    assert token_grid(n, h, w) == grid


def test_info_nce_is_low_for_matched_rows_and_symmetric():
    a = torch.eye(4) * 5
    low = info_nce(a, a, torch.tensor(10.0))
    high = info_nce(a, a.roll(1, 0), torch.tensor(10.0))
    assert low < 0.01 < 2 < high
    b = torch.randn(4, 4)
    assert torch.allclose(info_nce(a, b, torch.tensor(3.0)), info_nce(b, a, torch.tensor(3.0)))
