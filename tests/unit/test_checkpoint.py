import os
import random

import numpy as np
import torch

from mmfit.run import checkpoints as ckpt
from mmfit.run import files, layout
from mmfit.run.files import atomic_save, model_state
from mmfit.run.store import Run


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
    atomic_save({"w": torch.ones(2)}, path)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(files, "save_file", boom)
    try:
        atomic_save({"w": torch.zeros(2)}, path)
    except OSError:
        pass
    from safetensors.torch import load_file

    assert torch.equal(load_file(str(path))["w"], torch.ones(2))
    assert [f for f in os.listdir(tmp_path) if f.endswith(".tmp")] == []


def _half_frozen():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 3))
    model[0].requires_grad_(False)  # a frozen encoder
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    return model, opt, {n for n, p in model.named_parameters() if not p.requires_grad}


def _step(model, opt):
    model(torch.randn(6, 4)).sum().backward()
    opt.step()
    opt.zero_grad()


def test_the_frozen_tensors_are_written_once_and_model_safetensors_at_the_end(tmp_path, monkeypatch):
    """Keeper: each epoch's checkpoint and the best weights leave the frozen tensors out (they go to
    checkpoints/frozen once); model.safetensors, written by publish, is the whole model as it was at
    the best epoch; a resume gets every tensor back."""
    from safetensors.torch import load_file

    model, opt, frozen = _half_frozen()
    run = Run(tmp_path)
    writes = []
    real = ckpt.atomic_save
    monkeypatch.setattr(ckpt, "atomic_save", lambda t, p, m=None: (writes.append(p.name), real(t, p, m)))
    keeper = ckpt.Keeper(run, frozen)
    best = None
    for epoch, better in enumerate([True, False, True, False]):
        _step(model, opt)
        if better:
            best = {k: v.clone() for k, v in model.state_dict().items()}
        keeper.epoch(model_state(model), opt.state_dict(), {"epoch": epoch + 1}, better, epoch)
    assert writes.count("frozen.safetensors") == 1 and writes.count("best.safetensors") == 2
    assert not run.has(layout.WEIGHTS)  # nothing half-decided: the whole model only at the end
    last = load_file(str(run / layout.CHECKPOINT))
    assert frozen == {"0.weight", "0.bias"} and not any(k[6:] in frozen for k in last if k.startswith("model."))
    assert keeper.publish()
    published = load_file(str(run / layout.WEIGHTS))
    assert published.keys() == best.keys() and all(torch.equal(published[k], best[k]) for k in best)
    model2, opt2, _ = _half_frozen()
    torch.nn.init.zeros_(model2[0].weight)
    assert ckpt.load_training(run / layout.CHECKPOINT, model2, opt2) == {"epoch": 4}
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), model2.state_dict().values()))


def test_a_run_nobody_resumes_writes_only_model_safetensors(tmp_path):
    model, opt, frozen = _half_frozen()
    run = Run(tmp_path)
    keeper = ckpt.Keeper(run, frozen, resumable=False)
    for epoch, better in enumerate([True, True, False]):
        _step(model, opt)
        if better:
            best = {k: v.clone() for k, v in model.state_dict().items()}
        keeper.epoch(model_state(model), opt.state_dict(), {}, better, epoch)
    assert list(tmp_path.iterdir()) == []
    assert keeper.publish() and [p.name for p in tmp_path.iterdir()] == [layout.WEIGHTS]
    from safetensors import safe_open

    with safe_open(str(run / layout.WEIGHTS), framework="pt") as f:
        assert f.metadata()["epoch"] == "1" and all(torch.equal(f.get_tensor(k), best[k]) for k in best)


def test_a_checkpoint_from_before_the_frozen_file_resumes_and_then_writes_it(tmp_path):
    """A last.safetensors holding every tensor (written before checkpoints/frozen existed) resumes;
    the next epoch writes the frozen file before a checkpoint that leaves them out."""
    model, opt, frozen = _half_frozen()
    run = Run(tmp_path)
    ckpt.save_training(run / layout.CHECKPOINT, model, opt, {"epoch": 1})
    model2, opt2, _ = _half_frozen()
    torch.nn.init.zeros_(model2[0].weight)
    ckpt.load_training(run / layout.CHECKPOINT, model2, opt2)
    assert torch.equal(model2[0].weight, model[0].weight)
    keeper = ckpt.Keeper(run, frozen, resuming=True)
    keeper.epoch(model_state(model2), opt2.state_dict(), {"epoch": 2}, False, 1)
    assert run.has(layout.FROZEN)
    full = ckpt.checkpoint_model_state(run / layout.CHECKPOINT)
    assert full.keys() == model.state_dict().keys()


def test_members_holding_the_same_frozen_tensors_share_one_file(tmp_path):
    """An ensemble's members (Keeper with `shared`): each model.safetensors holds what it trained, the
    frozen tensors are written once beside them, and Run.weights() gives each member its whole model."""
    store = tmp_path / "members"
    expected = {}
    for seed in (1, 2):
        model, opt, frozen = _half_frozen()  # the same frozen layer (seed 0)
        torch.manual_seed(seed)
        torch.nn.init.normal_(model[2].weight)  # trained differently
        run = Run(store / f"m{seed}")
        keeper = ckpt.Keeper(run, frozen, resumable=False, shared=store)
        keeper.epoch(model_state(model), opt.state_dict(), {}, True, 0)
        assert keeper.publish()
        expected[run] = model.state_dict()
    assert len(list(store.glob("frozen-*.safetensors"))) == 1
    from safetensors.torch import load_file

    for run, state in expected.items():
        assert "0.weight" not in load_file(str(run / layout.WEIGHTS))
        got = run.weights()
        assert got.keys() == state.keys() and all(torch.equal(got[k], state[k]) for k in state)
