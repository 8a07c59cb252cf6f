"""Pruning and quantization building blocks on tiny modules: units really go, reloads are exact."""

import pytest
import torch
from torch import nn

from mmfit.models.contract import TransformerStack
from mmfit.models.quantized import Int8Embedding, dequantize_rows, quantize_rows
from mmfit.models.surgery import apply_masks, conform_to_state, sparsity_masks
from mmfit.optimize.prune import magnitude_prune, structured_prune


class Wrap(nn.Module):
    """What the pruning functions expect of a model: encoders and a fusion."""

    def __init__(self, enc):
        super().__init__()
        self.encoders = nn.ModuleDict({"x": enc})
        self.fusion = nn.Identity()


def _n(m):
    return sum(p.numel() for p in m.parameters())


def test_structured_prune_shrinks_our_transformer_and_rebuilds_from_shapes():
    torch.manual_seed(0)
    model = Wrap(TransformerStack(16, 2, 2, 0.0)).eval()
    x, mask = torch.randn(3, 5, 16), torch.ones(3, 5, dtype=torch.bool)
    before = _n(model)
    info = structured_prune(model, 0.5)
    assert info["ffn_neurons"] == {"removed": 64, "of": 128}
    assert _n(model) < before
    layer = model.encoders["x"].encoder.layers[0]
    assert layer.linear1.weight.shape == (32, 16) and layer.linear2.weight.shape == (16, 32)
    out = model.encoders["x"](x, mask)
    fresh = Wrap(TransformerStack(16, 2, 2, 0.0)).eval()
    resized = conform_to_state(fresh, model.state_dict())
    assert len(resized) == 4
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh.encoders["x"](x, mask), out)


def test_structured_prune_removes_bert_heads(tmp_path):
    pytest.importorskip("transformers")
    from transformers import BertConfig, BertModel

    from mmfit.models.encoders import EncoderSpec, build_encoder

    d = tmp_path / "bert"
    BertModel(BertConfig(vocab_size=20, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=32, max_position_embeddings=16)).save_pretrained(str(d))
    model = Wrap(build_encoder("hf", EncoderSpec("text", path=str(d)))).eval()
    ids = torch.tensor([[2, 5, 6, 3, 0, 0], [2, 7, 3, 0, 0, 0]])
    inputs = {"input_ids": ids, "attention_mask": ids != 0}
    info = structured_prune(model, 0.5)
    assert info["attention_heads"] == {"removed": 4, "of": 8}
    att = model.encoders["x"].model.encoder.layer[0].attention
    assert att.self.query.out_features == 8 and att.output.dense.in_features == 8
    assert att.self.num_attention_heads == 2
    out = model.encoders["x"](inputs).pooled
    assert out.shape == (2, 16) and torch.isfinite(out).all()
    fresh = Wrap(build_encoder("hf", EncoderSpec("text", path=str(d), load_weights=False))).eval()
    conform_to_state(fresh, model.state_dict())
    fresh.load_state_dict(model.state_dict())
    assert torch.allclose(fresh.encoders["x"](inputs).pooled, out, atol=1e-6)


def test_structured_prune_removes_efficientnet_channels():
    pytest.importorskip("efficientnet_lite_pytorch")
    from mmfit.models.encoders import EncoderSpec, build_encoder

    spec = EncoderSpec("image", load_weights=False)
    torch.manual_seed(0)
    model = Wrap(build_encoder("efficientnet-lite0", spec)).eval()
    x = {"x": torch.rand(2, 3, 32, 32)}
    before = _n(model)
    info = structured_prune(model, 0.5)
    assert info["conv_channels"]["removed"] * 2 == pytest.approx(info["conv_channels"]["of"], abs=32)
    assert _n(model) < 0.8 * before
    out = model.encoders["x"](x).pooled
    assert out.shape == (2, 1280)
    fresh = Wrap(build_encoder("efficientnet-lite0", spec)).eval()
    conform_to_state(fresh, model.state_dict())
    fresh.load_state_dict(model.state_dict())
    assert torch.allclose(fresh.encoders["x"](x).pooled, out, atol=1e-5)


def test_magnitude_prune_zeroes_the_smallest_and_masks_keep_them():
    torch.manual_seed(0)
    model = Wrap(nn.Sequential(nn.Linear(10, 10), nn.Linear(10, 4)))
    info = magnitude_prune(model, 0.3)
    assert info["pruned_weights"] == 42  # 30% of 140 weight-matrix entries
    masks = sparsity_masks(model)
    assert sum(int(m.sum()) for m in masks.values()) == 42
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    apply_masks(model, masks)
    assert sum(int((p == 0).sum()) for n, p in model.named_parameters() if n.endswith("weight")) == 42


def test_int8_rows_roundtrip_and_embedding():
    w = torch.randn(50, 8)
    q, s = quantize_rows(w)
    assert q.dtype == torch.int8 and s.shape == (50,)
    assert (dequantize_rows(q, s) - w).abs().max() <= s.max() / 2 + 1e-6
    emb = nn.Embedding(50, 8)
    qe = Int8Embedding.from_float(emb)
    ids = torch.tensor([[1, 2, 49]])
    assert torch.allclose(qe(ids), dequantize_rows(*quantize_rows(emb.weight.detach()))[ids])


def test_structured_prune_removes_conv_stem_channels():
    from mmfit.models.encoders import EncoderSpec, build_encoder

    torch.manual_seed(0)
    spec = EncoderSpec("image", dim=32, layers=1, heads=2, patch=8)
    model = Wrap(build_encoder("scratch", spec)).eval()
    x = {"x": torch.rand(2, 3, 32, 32)}
    info = structured_prune(model, 0.5)
    assert info["conv_channels"]["removed"] > 0
    stem = model.encoders["x"].patches.stem
    assert stem[0].out_channels == stem[1].num_channels == stem[3].in_channels == 8  # 4 of 8 groups of 2
    assert stem[1].num_groups == 4
    out = model.encoders["x"](x).pooled
    fresh = Wrap(build_encoder("scratch", spec)).eval()
    conform_to_state(fresh, model.state_dict())
    fresh.load_state_dict(model.state_dict())
    assert torch.allclose(fresh.encoders["x"](x).pooled, out, atol=1e-6)


def test_factorised_embedding_is_the_truncated_svd():
    from mmfit.models.encoders.hf import FactorizedEmbedding

    torch.manual_seed(0)
    emb = torch.nn.Embedding(50, 12)
    ids = torch.arange(50)
    full = FactorizedEmbedding.from_embedding(emb, 12)
    assert torch.allclose(full(ids), emb(ids), atol=1e-5)  # full rank: the same table
    errs = [(FactorizedEmbedding.from_embedding(emb, r)(ids) - emb.weight).norm().item() for r in (2, 6, 10)]
    assert errs[0] > errs[1] > errs[2] > 1e-3  # lower rank, larger (but bounded) error


def test_truncated_wav_is_refused_not_read_short():
    import io

    import numpy as np
    import soundfile as sf

    from mmfit.data.modalities.audio import wav_truncation

    buf = io.BytesIO()
    sf.write(buf, np.zeros(800, np.float32), 8000, format="WAV")
    data = buf.getvalue()
    assert wav_truncation(data) is None
    assert "truncated" in wav_truncation(data[:500])  # libsndfile alone would read 228 frames silently
    assert wav_truncation(b"ID3 not a wav") is None  # other formats are left to the decoder
