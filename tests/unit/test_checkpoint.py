import os
import random

import numpy as np
import torch

from mmfit import run as run_dir
from mmfit.training import checkpoint as ckpt


def test_training_checkpoint_round_trip_restores_model_optimizer_and_rng(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(3):
        model(torch.randn(5, 4)).sum().backward()
        opt.step()
        opt.zero_grad()
    path = tmp_path / "c" / "last.safetensors"
    ckpt.save_training(path, model, opt, {"epoch": 3, "best": 0.5})
    expect_torch, expect_np, expect_py = torch.rand(1), np.random.rand(), random.random()

    model2 = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    opt2 = torch.optim.AdamW(model2.parameters(), lr=1e-2)
    state = ckpt.load_training(path, model2, opt2)
    assert state == {"epoch": 3, "best": 0.5}
    assert torch.rand(1) == expect_torch and np.random.rand() == expect_np and random.random() == expect_py
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)
    x = torch.randn(5, 4)
    for m, o in ((model, opt), (model2, opt2)):
        m(x).sum().backward()
        o.step()
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.allclose(a, b)
    assert [f for f in os.listdir(path.parent) if f.endswith(".tmp")] == []


def test_a_failed_write_leaves_the_old_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    run_dir.atomic_save({"w": torch.ones(2)}, path)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(run_dir, "save_file", boom)
    try:
        run_dir.atomic_save({"w": torch.zeros(2)}, path)
    except OSError:
        pass
    from safetensors.torch import load_file

    assert torch.equal(load_file(str(path))["w"], torch.ones(2))
    assert [f for f in os.listdir(tmp_path) if f.endswith(".tmp")] == []
