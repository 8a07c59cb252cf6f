import io

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from mmfit.config import AudioConfig, ImageConfig, TextConfig
from mmfit.data.modalities.audio import AudioProcessor, log_mel
from mmfit.data.modalities.image import DecodeError, ImageProcessor
from mmfit.data.modalities.text import TextProcessor


def _png(img: Image.Image) -> bytes:
    b = io.BytesIO()
    img.save(b, format="PNG")
    return b.getvalue()


def test_rgba_is_composited_on_white_and_grayscale_becomes_rgb():
    proc = ImageProcessor("i", ImageConfig(size=8, fit="squash"))
    transparent = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    arr = proc.decode_bytes(_png(transparent))
    assert arr.shape == (3, 8, 8) and arr.dtype == np.uint8
    assert (arr == 255).all()  # fully transparent red -> white
    opaque = proc.decode_bytes(_png(Image.new("RGBA", (10, 10), (255, 0, 0, 255))))
    assert (opaque[0] == 255).all() and (opaque[1] == 0).all()
    gray = proc.decode_bytes(_png(Image.new("L", (30, 12), 77)))
    assert gray.shape == (3, 8, 8) and (gray == 77).all()


@pytest.mark.parametrize("fit", ["pad", "squash", "crop"])
def test_any_size_becomes_the_configured_square(fit):
    proc = ImageProcessor("i", ImageConfig(size=12, fit=fit))
    for w, h in [(5, 40), (100, 7), (12, 12)]:
        assert proc.decode_bytes(_png(Image.new("RGB", (w, h), (1, 2, 3)))).shape == (3, 12, 12)


def test_corrupt_image_is_a_decode_error():
    with pytest.raises(DecodeError, match="cannot decode image"):
        ImageProcessor("i", ImageConfig()).decode_bytes(b"\x89PNG\r\n\x1a\nnot really")


def _wav(wave, sr, fmt="WAV") -> bytes:
    b = io.BytesIO()
    sf.write(b, wave, sr, format=fmt)
    return b.getvalue()


def test_audio_stereo_to_mono_resampled_and_padded():
    proc = AudioProcessor("a", AudioConfig(sample_rate=8000, seconds=0.5), "logmel")
    t = np.arange(16000 // 4) / 16000  # 0.25 s at 16 kHz, stereo
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.zeros_like(t)], 1).astype(np.float32)
    out = proc.decode_bytes(_wav(stereo, 16000))
    assert out.shape == (4000,)  # 0.5 s at 8 kHz
    assert np.abs(out[:2000]).max() == pytest.approx(0.5, abs=0.05)  # mean of the two channels
    assert np.abs(out[2100:]).max() == 0.0  # padded
    flac = proc.decode_bytes(_wav(stereo, 16000, "FLAC"))
    assert flac.shape == (4000,)


def test_corrupt_and_empty_audio_are_decode_errors():
    proc = AudioProcessor("a", AudioConfig(), "logmel")
    with pytest.raises(DecodeError, match="cannot decode audio"):
        proc.decode_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    wav = _wav(np.zeros(800, np.float32), 8000)
    with pytest.raises(DecodeError):
        proc.decode_bytes(wav[: len(wav) // 3][:44])  # header only, truncated


def test_log_mel_shape_and_peak_follows_pitch():
    sr = 8000
    t = torch.arange(sr) / sr
    low = torch.sin(2 * torch.pi * 300 * t)
    high = torch.sin(2 * torch.pi * 3000 * t)
    mel = log_mel(torch.stack([low, high]), sr, 256, 128, 32)
    assert mel.shape == (2, 32, sr // 128 + 1)
    assert mel[0].mean(1).argmax() < mel[1].mean(1).argmax()


def test_wordpiece_tokenizer_trained_on_train_text():
    proc = TextProcessor("t", TextConfig(max_length=8, vocab_size=60))
    proc.fit(["the red round thing", "a blue square thing", "green spiky"] * 5)
    enc = proc.encode(["red thing", "zzz qqq unseen words here and more more more"])
    assert enc["input_ids"].shape == (2, 8) and enc["attention_mask"].dtype == bool
    assert enc["attention_mask"][0].sum() == 3  # [CLS] red thing
    assert enc["attention_mask"][1].all()  # truncated to max_length


@pytest.mark.parametrize("fmt,subtype", [("OGG", "VORBIS"), ("MP3", "MPEG_LAYER_III"), ("FLAC", None)])
def test_ogg_mp3_flac_decode(fmt, subtype):
    sr = 16000
    t = np.arange(sr // 2) / sr
    wave = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    b = io.BytesIO()
    sf.write(b, wave, sr, format=fmt, subtype=subtype)
    out = AudioProcessor("a", AudioConfig(sample_rate=8000, seconds=1.0), "logmel").decode_bytes(b.getvalue())
    assert out.shape == (8000,)
    assert np.abs(out[1000:3000]).max() > 0.2  # the tone survived decoding and resampling
