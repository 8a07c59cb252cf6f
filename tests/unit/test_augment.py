"""Augmentation: shapes, ranges, determinism under a seed, what each op may and may not touch."""

import math

import pytest
import torch

from mmfit.config import AugmentConfig, from_dict
from mmfit.data.augment import Augmenter
from mmfit.models.mixup import mix_outputs
from mmfit.data.batch import Batch
from mmfit.models.contract import EncoderOutput

SPECIALS, MASK_ID, PAD = [0, 1, 2, 3, 4], 4, 0  # [PAD] [UNK] [CLS] [SEP] [MASK]


def _aug(**parts) -> Augmenter:
    cfg = from_dict(AugmentConfig, parts)
    kinds = {"image": "image", "audio": "audio", "wave": "audio", "text": "text", "tabular": "tabular"}
    return Augmenter(cfg, kinds, {"text": (SPECIALS, MASK_ID, PAD)}, {"audio": "logmel", "wave": "waveform"})


def _batch(b: int = 6) -> Batch:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(10, 50, (b, 12), generator=g)
    ids[:, 0] = 2  # [CLS]
    mask = torch.ones(b, 12, dtype=torch.bool)
    mask[:, 8:] = False
    ids[:, 8:] = PAD
    inputs = {
        "image": {"x": torch.rand(b, 3, 16, 16, generator=g)},
        "audio": {"x": torch.randn(b, 16, 40, generator=g) - 4},
        "wave": {"x": torch.randn(b, 800, generator=g) * 0.1},
        "text": {"input_ids": ids, "attention_mask": mask},
        "tabular": {"values": torch.randn(b, 2, generator=g), "categories": torch.zeros(b, 1, dtype=torch.long),
                    "feature_mask": torch.tensor([[True, False, True]] * b)},
    }
    return Batch(inputs, {m: torch.ones(b, dtype=torch.bool) for m in inputs})


def _run(aug, seed):
    return aug(_batch(), torch.Generator().manual_seed(seed))


IMAGE_OPS = [{"crop": 0.6}, {"rotate": 20.0}, {"hflip": 1.0}, {"vflip": 1.0}, {"jitter": 0.3}, {"noise": 0.1},
             {"blur": 1.0}]


@pytest.mark.parametrize("op", IMAGE_OPS, ids=lambda o: next(iter(o)))
def test_each_image_op_keeps_shape_and_range_and_is_seeded(op):
    aug = _aug(image=op)
    orig = _batch().inputs["image"]["x"]
    a, b, c = _run(aug, 0), _run(aug, 0), _run(aug, 1)
    x = a.inputs["image"]["x"]
    assert x.shape == orig.shape and x.min() >= 0 and x.max() <= 1
    assert not torch.equal(x, orig)
    assert torch.equal(x, b.inputs["image"]["x"])  # same seed, same augmentation
    if "flip" not in next(iter(op)):
        assert not torch.equal(x, c.inputs["image"]["x"])  # another seed, another one
    assert torch.equal(a.inputs["audio"]["x"], _batch().inputs["audio"]["x"])  # other modalities untouched


def test_flips_are_exact():
    x = _run(_aug(image={"hflip": 1.0}), 0).inputs["image"]["x"]
    assert torch.equal(x, _batch().inputs["image"]["x"].flip(-1))


AUDIO_OPS = [{"gain_db": 6.0}, {"snr_db": 10.0, "noise_p": 1.0}, {"shift": 0.2}, {"time_masks": 2},
             {"freq_masks": 2}]


@pytest.mark.parametrize("op", AUDIO_OPS, ids=lambda o: next(iter(o)))
def test_each_audio_op_on_logmel_and_waveform(op):
    aug = _aug(audio=op)
    a, b = _run(aug, 0), _run(aug, 0)
    orig = _batch()
    for m in ("audio", "wave"):
        x = a.inputs[m]["x"]
        assert x.shape == orig.inputs[m]["x"].shape and torch.isfinite(x).all()
        assert torch.equal(x, b.inputs[m]["x"])
    masks_only = "time_masks" in op or "freq_masks" in op
    assert not torch.equal(a.inputs["audio"]["x"], orig.inputs["audio"]["x"])
    if masks_only:  # SpecAugment needs a spectrogram: raw waveforms are left alone
        assert torch.equal(a.inputs["wave"]["x"], orig.inputs["wave"]["x"])
    else:
        assert not torch.equal(a.inputs["wave"]["x"], orig.inputs["wave"]["x"])


def test_gain_is_a_constant_log_offset_within_range():
    x0 = _batch().inputs["audio"]["x"]
    x = _run(_aug(audio={"gain_db": 6.0}), 0).inputs["audio"]["x"]
    d = x - x0
    per_clip = d.flatten(1)
    assert torch.allclose(per_clip, per_clip[:, :1].expand_as(per_clip), atol=1e-5)
    assert per_clip.abs().max() <= 6.0 * math.log(10) / 10 + 1e-5


def test_noise_at_the_requested_snr():
    x0 = _batch().inputs["wave"]["x"]
    x = _run(_aug(audio={"snr_db": 10.0, "noise_p": 1.0}), 0).inputs["wave"]["x"]
    snr = 10 * torch.log10(x0.pow(2).mean(1) / (x - x0).pow(2).mean(1))
    assert (snr - 10).abs().max() < 1.5


def test_spec_masks_cover_bands():
    x0 = _batch().inputs["audio"]["x"]
    x = _run(_aug(audio={"time_masks": 1, "time_mask_width": 10}), 3).inputs["audio"]["x"]
    changed_frames = (x != x0).any(1)  # [B, frames]
    assert changed_frames.sum(1).max() <= 10  # at most one band of <= 10 frames per clip


def _words(ids, mask):
    return [t for t, k in zip(ids.tolist(), mask.tolist()) if k and t not in SPECIALS]


@pytest.mark.parametrize("op", [{"token_dropout": 0.5}, {"swap": 0.5}, {"deletion": 0.5}],
                         ids=lambda o: next(iter(o)))
def test_text_ops_respect_special_tokens_and_padding(op):
    orig = _batch().inputs["text"]
    a = _run(_aug(text=op), 0).inputs["text"]
    assert torch.equal(a["input_ids"], _run(_aug(text=op), 0).inputs["text"]["input_ids"])
    ids, mask = a["input_ids"], a["attention_mask"]
    assert ids.shape == orig["input_ids"].shape
    assert (ids[:, 0] == 2).all()  # [CLS] stays first
    assert not torch.equal(ids, orig["input_ids"])
    for i in range(ids.shape[0]):
        before, after = _words(orig["input_ids"][i], orig["attention_mask"][i]), _words(ids[i], mask[i])
        n_real = int(mask[i].sum())
        assert mask[i][:n_real].all() and not mask[i][n_real:].any()  # real tokens, then padding
        assert (ids[i][~mask[i]] == PAD).all()
        if "swap" in op:
            assert sorted(before) == sorted(after)
        if "deletion" in op:
            assert 1 <= len(after) <= len(before)
            it = iter(before)
            assert all(t in it for t in after)  # the kept words in their original order
        if "token_dropout" in op:
            assert len(after) + int((ids[i] == MASK_ID).sum()) == len(before)


def test_tabular_jitter_only_on_present_cells():
    orig = _batch().inputs["tabular"]["values"]
    x = _run(_aug(tabular={"jitter": 0.5}), 0).inputs["tabular"]["values"]
    assert not torch.equal(x[:, 0], orig[:, 0])
    assert torch.equal(x[:, 1], orig[:, 1])  # feature_mask False: a missing number stays missing


def test_nothing_on_by_default():
    aug = _aug()
    assert not aug.active
    assert aug.sample_mix(8, torch.Generator()) is None


def test_mixup_sampling_and_output_mixing():
    aug = _aug(mixup=0.4)
    perm, lam = aug.sample_mix(8, torch.Generator().manual_seed(0))
    perm2, lam2 = aug.sample_mix(8, torch.Generator().manual_seed(0))
    assert torch.equal(perm, perm2) and float(lam) == float(lam2) and 0 <= float(lam) <= 1
    tok = torch.arange(4 * 2 * 3, dtype=torch.float32).view(4, 2, 3)
    o = EncoderOutput(tok, torch.ones(4, 2, dtype=torch.bool), tok.mean(1))
    present = {"m": torch.tensor([True, True, False, True])}
    p = torch.tensor([1, 0, 3, 2])
    mixed, pres = mix_outputs({"m": o}, present, p, torch.tensor(0.7))
    out = mixed["m"].pooled
    assert torch.allclose(out[0], 0.7 * o.pooled[0] + 0.3 * o.pooled[1])
    assert torch.allclose(out[2], o.pooled[3])  # row 2 lacks the modality: its partner's is used whole
    assert torch.allclose(out[3], o.pooled[3])  # row 3's partner lacks it: row 3's own
    assert pres["m"].tolist() == [True, True, True, True]
    same, _ = mix_outputs({"m": o}, present, p, torch.tensor(1.0))
    assert torch.allclose(same["m"].pooled[[0, 1, 3]], o.pooled[[0, 1, 3]])


def test_augment_config_errors_name_the_key():
    from mmfit.config import ConfigError, load_config

    base = {"data": {"columns": {"t": "text"}, "targets": {"y": "classification"}}}
    with pytest.raises(ConfigError, match="augment.image.hflip"):
        load_config({**base, "augment": {"image": {"hflip": 1.5}}})
    with pytest.raises(ConfigError, match="did you mean 'rotate'"):
        load_config({**base, "augment": {"image": {"rotation": 10}}})
