"""Every encoder meets the EncoderOutput contract; fusions honour presence; losses log each term."""

import pytest
import torch

from mmfit.models.contract import EncoderOutput
from mmfit.models.encoders import EncoderSpec, build_encoder
from mmfit.registry import ENCODERS, FUSIONS


def _check(out: EncoderOutput, b: int, dim: int):
    assert out.tokens.dim() == 3 and out.tokens.shape[0] == b and out.tokens.shape[2] == dim
    assert out.mask.shape == out.tokens.shape[:2] and out.mask.dtype == torch.bool
    assert out.pooled.shape == (b, dim)
    assert torch.isfinite(out.tokens).all() and torch.isfinite(out.pooled).all()


def test_scratch_encoders_meet_the_contract():
    b = 3
    text = build_encoder("scratch", EncoderSpec("text", dim=16, layers=1, heads=2, vocab_size=50, max_length=10))
    ids = torch.randint(1, 50, (b, 10))
    mask = torch.ones(b, 10, dtype=torch.bool)
    mask[0, 3:] = False
    _check(text({"input_ids": ids, "attention_mask": mask}), b, 16)
    img = build_encoder("scratch", EncoderSpec("image", dim=16, layers=1, heads=2, patch=4))
    out = img({"x": torch.rand(b, 3, 16, 16)})
    _check(out, b, 16)
    assert out.tokens.shape[1] == 16  # (16/4)^2 patches
    aud = build_encoder("scratch", EncoderSpec("audio", dim=16, layers=1, heads=2, patch=4))
    _check(aud({"x": torch.randn(b, 16, 33)}), b, 16)
    tab = build_encoder("scratch", EncoderSpec("tabular", dim=16, layers=1, heads=2, n_numeric=2, cat_sizes=[4]))
    fm = torch.tensor([[True, True, True], [False, False, False], [True, False, True]])
    out = tab({"values": torch.randn(b, 2), "categories": torch.tensor([[1], [0], [3]]), "feature_mask": fm})
    _check(out, b, 16)  # a row with every cell missing stays finite


def test_text_padding_does_not_change_the_output():
    enc = build_encoder("scratch", EncoderSpec("text", dim=16, layers=1, heads=2, vocab_size=30, max_length=8))
    enc.eval()
    ids = torch.tensor([[5, 6, 7, 0, 0, 0, 0, 0]])
    mask = ids != 0
    ids2 = ids.clone()
    ids2[0, 5] = 9  # garbage under the padding mask
    a = enc({"input_ids": ids, "attention_mask": mask}).pooled
    b = enc({"input_ids": ids2, "attention_mask": mask}).pooled
    assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("fusion", ["concat", "gated", "attention"])
def test_fusion_uses_the_missing_embedding_for_absent_rows(fusion):
    dims = {"a": 8, "b": 12}
    f = FUSIONS.get(fusion)(dims, 16, 1, 2, 0.0).eval()
    outs = {m: EncoderOutput(torch.randn(4, 5, d), torch.ones(4, 5, dtype=torch.bool), torch.randn(4, d))
            for m, d in dims.items()}
    present = {"a": torch.tensor([True, True, False, False]), "b": torch.ones(4, dtype=torch.bool)}
    fused, emb = f(outs, present)
    assert fused.shape == (4, 16)
    assert torch.allclose(emb["a"][2], f.project.missing["a"]) and torch.allclose(emb["a"][3], emb["a"][2])
    # an absent modality's data has no influence
    outs2 = dict(outs)
    outs2["a"] = EncoderOutput(outs["a"].tokens * 5 + 1, outs["a"].mask, outs["a"].pooled * 5 + 1)
    fused2, _ = f(outs2, present)
    assert torch.allclose(fused[2:], fused2[2:], atol=1e-5)
    assert not torch.allclose(fused[:2], fused2[:2], atol=1e-3)


def test_registry_names():
    assert {"scratch", "hf", "minilm", "efficientnet-lite0"} <= set(ENCODERS.names())
    assert {"concat", "gated", "attention"} <= set(FUSIONS.names())


def test_total_loss_has_every_term_and_respects_masks():
    from types import SimpleNamespace

    from mmfit.models.losses import total_loss

    logits = {"y": torch.randn(4, 3, requires_grad=True), "r": torch.randn(4, 1)}
    aux = {"a": torch.randn(4, 3), "b": torch.randn(4, 3)}
    out = SimpleNamespace(logits=logits, aux_logits=aux)
    batch = SimpleNamespace(targets={"y": torch.tensor([0, 1, 2, -1]), "r": torch.randn(4)},
                            target_mask={"y": torch.tensor([True, True, True, False]), "r": torch.ones(4, dtype=torch.bool)},
                            present={"a": torch.tensor([True, False, True, True]), "b": torch.ones(4, dtype=torch.bool)})
    terms = total_loss(out, batch, {"y": "cross_entropy", "r": "mse"}, {"y": 1.0, "r": 0.5}, 2.0, 0.3)
    assert set(terms) == {"total", "task/y", "task/r", "aux/a", "aux/b"}
    expect = 0.3 * (terms["aux/a"] + terms["aux/b"]) + 2.0 * (terms["task/y"] + 0.5 * terms["task/r"])
    assert torch.allclose(terms["total"], expect)
    ce = torch.nn.functional.cross_entropy(aux["a"][[0, 2]], torch.tensor([0, 2]))
    assert torch.allclose(terms["aux/a"], ce)  # only rows with target and modality present
    terms["total"].backward()
    assert logits["y"].grad[3].abs().sum() == 0  # masked target row gets no gradient
