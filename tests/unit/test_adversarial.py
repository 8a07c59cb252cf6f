"""Attacks (models/adversarial.py): they raise the loss, stay inside epsilon, leave the weights
and their gradients untouched; FreeLB accumulates the weights' gradients; a training run with PGD
logs its adversarial term."""

import copy

import pytest
import torch

from conftest import make_dataset, tiny_config
from mmfit.config import AdversarialConfig, ConfigError, load_config, modality_kind
from mmfit.data.prepare import prepare_training
from mmfit.models.model import build_model
from mmfit.models.adversarial import Attack
from mmfit.models.losses import total_loss


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("adv")
    cfg = load_config(tiny_config(make_dataset(tmp / "data"), tmp))
    pre, splits, _ = prepare_training(cfg, log=lambda *a: None)
    torch.manual_seed(0)
    model = build_model(cfg, pre)
    model.eval()  # no dropout: the loss is a function of the inputs alone
    batch = splits["train"].batch(torch.arange(16))
    kinds = {m: modality_kind(cfg, m) for m in model.modalities}
    args = ({t: p.loss_kind for t, p in pre.targets.items()}, {t: 1.0 for t in pre.targets}, 1.0, 1.0)
    loss_fn = lambda out: total_loss(out, batch, *args)["total"]  # noqa: E731
    return model, batch, kinds, loss_fn


def _loss(model, batch, loss_fn, attack=None, deltas=None):
    with torch.no_grad():
        if attack is None:
            return float(loss_fn(model(batch.inputs, batch.present)))
        with attack.applied(model, batch.inputs, dict(deltas)) as inputs:
            return float(loss_fn(model(inputs, batch.present)))


@pytest.mark.parametrize("method", ["fgsm", "pgd"])
def test_attacks_raise_the_loss_inside_epsilon_and_leave_the_weights_alone(setup, method):
    model, batch, kinds, loss_fn = setup
    before = copy.deepcopy(model.state_dict())
    cfg = AdversarialConfig(method=method, steps=5, epsilon={"image": 0.05, "audio": 0.5, "text": 0.2})
    attack = Attack(cfg, kinds)
    torch.manual_seed(1)
    deltas = attack.perturb(model, batch, loss_fn)
    assert set(k for k in deltas if "/" not in k) == {"image", "audio", "text"}
    assert _loss(model, batch, loss_fn, attack, deltas) > _loss(model, batch, loss_fn) + 1e-3
    assert deltas["image"].abs().max() <= 0.05 + 1e-6 and deltas["audio"].abs().max() <= 0.5 + 1e-6
    assert deltas["text"].norm(dim=-1).max() <= deltas["text/radius"] * (1 + 1e-5)
    with attack.applied(model, batch.inputs, dict(deltas)) as inputs:  # images stay images
        assert inputs["image"]["x"].min() >= 0 and inputs["image"]["x"].max() <= 1
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())
    assert not model.input_grad  # the frozen-encoder switch is put back


def test_pgd_finds_a_higher_loss_than_fgsm_at_the_same_epsilon(setup):
    model, batch, kinds, loss_fn = setup
    eps = {"image": 0.02, "audio": 0.2, "text": 0.1}
    losses = {}
    for method in ("fgsm", "pgd"):
        attack = Attack(AdversarialConfig(method=method, steps=7, epsilon=eps), kinds)
        torch.manual_seed(2)
        losses[method] = _loss(model, batch, loss_fn, attack, attack.perturb(model, batch, loss_fn))
    assert losses["pgd"] >= losses["fgsm"] - 1e-4, losses


def test_freelb_accumulates_the_weights_gradients(setup):
    model, batch, kinds, loss_fn = setup
    attack = Attack(AdversarialConfig(method="freelb", steps=2), kinds)
    model.zero_grad(set_to_none=True)
    losses = attack.free_steps(model, batch, loss_fn, scale=1.0)
    assert len(losses) == 2 and losses[1] >= losses[0] - 1e-4  # the second step is the harder one
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    model.zero_grad(set_to_none=True)


def test_adversarial_training_runs_and_logs_its_term(tmp_path, quiet_console):
    import json

    import mmfit

    data = make_dataset(tmp_path / "data", n=45)
    cfg = tiny_config(data, tmp_path, train__epochs=2)
    cfg["train"]["adversarial"] = {"method": "pgd", "steps": 2, "modalities": ["image", "text"]}
    run = mmfit.train(cfg, run_dir=tmp_path / "run", console=quiet_console)
    line = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert line["train"]["adversarial"] > 0
    bad = tiny_config(data, tmp_path)
    bad["train"]["adversarial"] = {"method": "pgd", "modalities": ["x1"]}
    with pytest.raises(ConfigError, match="not an image, audio, video or text input"):
        load_config(bad)
    bad["train"]["adversarial"] = {"method": "pgd"}
    bad["augment"] = {"mixup": 0.2}
    with pytest.raises(ConfigError, match="mixup"):
        load_config(bad)
