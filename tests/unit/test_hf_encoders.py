"""The `hf` encoder on tiny randomly initialised local Hugging Face directories (no hub)."""

import pytest
import torch

from mmfit.models.encoders import EncoderSpec, build_encoder

transformers = pytest.importorskip("transformers")


def _bert_dir(tmp_path):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    d = tmp_path / "bert"
    d.mkdir()
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "red", "blue", "thing", "##s"]
    # transformers 5 ignores vocab_file= (every word became [UNK]); the vocabulary goes in directly
    BertTokenizerFast(vocab={w: i for i, w in enumerate(words)}).save_pretrained(str(d))
    cfg = BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=32)
    BertModel(cfg).save_pretrained(str(d))
    return d


def test_hf_text_encoder_and_rebuild_from_saved_architecture(tmp_path):
    d = _bert_dir(tmp_path)
    enc = build_encoder("hf", EncoderSpec("text", path=str(d))).eval()
    assert enc.pretrained and enc.dim == 16
    ids = torch.tensor([[2, 5, 6, 3, 0]])
    mask = ids != 0
    out = enc({"input_ids": ids, "attention_mask": mask})
    assert out.tokens.shape == (1, 5, 16) and out.pooled.shape == (1, 16)
    enc.save_architecture(tmp_path / "arch")
    again = build_encoder("hf", EncoderSpec("text", path=str(tmp_path / "arch"), load_weights=False)).eval()
    again.load_state_dict(enc.state_dict())
    assert torch.allclose(again({"input_ids": ids, "attention_mask": mask}).pooled, out.pooled, atol=1e-6)


def test_hf_vision_and_audio_encoders(tmp_path):
    from transformers import ViTConfig, ViTModel, Wav2Vec2Config, Wav2Vec2Model

    ViTModel(ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                       image_size=32, patch_size=8)).save_pretrained(str(tmp_path / "vit"))
    enc = build_encoder("hf", EncoderSpec("image", path=str(tmp_path / "vit"))).eval()
    out = enc({"x": torch.rand(2, 3, 16, 16)})  # another size than trained: positions interpolated
    assert out.pooled.shape == (2, 16)
    Wav2Vec2Model(Wav2Vec2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                 conv_dim=(8, 8), conv_stride=(5, 4), conv_kernel=(10, 4),
                                 num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2)
                  ).save_pretrained(str(tmp_path / "w2v"))
    enc = build_encoder("hf", EncoderSpec("audio", path=str(tmp_path / "w2v"))).eval()
    out = enc({"x": torch.randn(2, 800)})
    assert out.pooled.shape == (2, 16) and out.tokens.shape[1] > 10


def test_hf_encoder_needs_a_local_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        build_encoder("hf", EncoderSpec("text", path=str(tmp_path)))
    with pytest.raises(ValueError, match="needs `path`"):
        build_encoder("hf", EncoderSpec("text"))
