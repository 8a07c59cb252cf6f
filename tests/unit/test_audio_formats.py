"""Phone and browser audio (issue 17): AAC/M4A, WebM/Opus and AMR decode through FFmpeg (PyAV)
where libsndfile stops, to what the WAV they were made from decodes to; headers give the limits."""

import io

import numpy as np
import pytest

pytest.importorskip("av")

from mmfit.config import AudioConfig  # noqa: E402
from mmfit.data.infer import _sniff  # noqa: E402
from mmfit.data.modalities.audio import AudioProcessor, audio_info, encode_audio, read_audio  # noqa: E402
from mmfit.data.modalities.image import DecodeError  # noqa: E402


def _voice(sr: int, seconds: float = 1.5) -> np.ndarray:
    """A voiced 'note': three harmonics on a rising pitch, in syllables."""
    t = np.arange(int(sr * seconds)) / sr
    phase = 2 * np.pi * np.cumsum(140 + 60 * t) / sr
    env = np.clip(np.sin(np.pi * 3 * t), 0, None) ** 0.5
    return (0.5 * sum(np.sin(k * phase) / k for k in (1, 2, 3)) * env).astype(np.float32)


def _proc(sr: int) -> AudioProcessor:
    return AudioProcessor("note", AudioConfig(sample_rate=sr, seconds=1.0, n_mels=40, n_fft=256, hop_length=80))


@pytest.mark.parametrize("container,sr", [("m4a", 16000), ("m4a", 8000), ("webm", 16000), ("webm", 8000)])
def test_phone_and_browser_audio_decodes_to_the_wav_waveform(container, sr):
    wave = _voice(sr)
    proc = _proc(sr)
    ref = proc.decode_bytes(encode_audio(wave, sr, "wav"))
    got = proc.decode_bytes(encode_audio(wave, sr, container))
    assert got.shape == ref.shape
    assert np.corrcoef(got, ref)[0, 1] > 0.99  # no lag: AAC's priming is skipped by its edit list


def test_amr_decodes_to_the_same_spectrogram():
    """AMR-NB (12.2 kbit/s, a CELP speech codec) keeps a voice's spectrum, not its waveform: the
    decoded samples correlate with the source only about 0.7 at their best lag, whatever the
    decoder, so the check is on the log-mel the model reads."""
    wave = _voice(8000)
    proc = _proc(8000)
    ref = proc.finalize(proc.decode_bytes(encode_audio(wave, 8000, "wav"))[None])[0].astype(np.float32)
    got = proc.finalize(proc.decode_bytes(encode_audio(wave, 8000, "amr"))[None])[0].astype(np.float32)
    assert np.corrcoef(got.ravel(), ref.ravel())[0, 1] > 0.85


@pytest.mark.parametrize("container,rate", [("wav", 16000), ("m4a", 16000), ("webm", 48000), ("amr", 8000)])
def test_headers_give_length_channels_and_rate(container, rate):
    stereo = np.stack([_voice(16000, 2.0), 0.5 * _voice(16000, 2.0)], 1)
    info = audio_info(encode_audio(stereo, 16000, container))
    assert info.samplerate == rate and info.channels == (1 if container == "amr" else 2)
    assert info.duration == pytest.approx(2.0, abs=0.1)


def test_only_what_the_model_reads_is_decoded():
    data = encode_audio(_voice(16000, 30.0), 16000, "m4a")  # 30 s
    wave, sr = read_audio(data, lambda rate: rate // 2)
    assert sr == 16000 and wave.shape == (8000, 1)


def test_what_neither_decoder_reads_is_refused_with_both_reasons():
    with pytest.raises(DecodeError, match="cannot decode audio: .*FFmpeg"):
        audio_info(b"\x00\x01 not audio at all " * 20)
    with pytest.raises(DecodeError, match="cannot decode audio"):
        _proc(8000).decode_bytes(b"RIFF....WAVEjunk" * 3)


def test_manifest_inference_knows_phone_audio(tmp_path):
    path = tmp_path / "note.m4a"
    path.write_bytes(encode_audio(_voice(16000), 16000, "m4a"))
    assert _sniff(path) == "audio"
    bad = tmp_path / "x.m4a"
    bad.write_bytes(io.BytesIO(b"nothing").getvalue())
    assert _sniff(bad) is None
