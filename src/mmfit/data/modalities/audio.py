"""Audio: decode with soundfile, mix to mono, resample, crop/pad, log-mel via torch.stft."""

from __future__ import annotations

import io
import math
import struct
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from scipy.signal import resample_poly

from mmfit.config import AudioConfig
from mmfit.data.modalities.image import DecodeError


@lru_cache(maxsize=8)
def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int) -> torch.Tensor:
    """HTK-style triangular mel filters, [n_freqs, n_mels]."""
    n_freqs = n_fft // 2 + 1
    freqs = torch.linspace(0, sample_rate / 2, n_freqs)

    def hz_to_mel(f):
        return 2595.0 * math.log10(1.0 + f / 700.0)

    m = torch.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2), n_mels + 2)
    f_pts = 700.0 * (10 ** (m / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - freqs.unsqueeze(1)
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return torch.clamp(torch.min(down, up), min=0.0)


def log_mel(wave: torch.Tensor, sample_rate: int, n_fft: int, hop: int, n_mels: int) -> torch.Tensor:
    """[B, samples] -> [B, n_mels, frames] log-mel power."""
    window = torch.hann_window(n_fft)
    spec = torch.stft(wave, n_fft, hop_length=hop, window=window, return_complex=True, center=True)
    power = spec.abs().pow(2)  # [B, freqs, frames]
    mel = torch.einsum("bft,fm->bmt", power, mel_filterbank(n_fft, n_mels, sample_rate))
    return torch.log(mel + 1e-6)


def wav_truncation(data: bytes) -> str | None:
    """A WAV file cut short still decodes (libsndfile reads what is there): compare the size its
    header declares for the samples with the bytes that follow. -> a reason, or None."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    pos = 12
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        if cid == b"data":
            have = len(data) - pos - 8
            if size not in (0, 0xFFFFFFFF) and have < size:  # 0 / -1: writers that stream unknown lengths
                return f"cannot decode audio: truncated, the WAV header declares {size:,} bytes of samples, the file holds {have:,}"
            return None
        pos += 8 + size + (size & 1)
    return "cannot decode audio: truncated, the WAV file has no sample data"


class AudioProcessor:
    kind = "audio"

    def __init__(self, column: str, cfg: AudioConfig, features: str = "logmel"):
        self.column = column
        self.cfg = cfg
        self.features = features  # resolved: logmel or waveform
        self.n_samples = int(round(cfg.seconds * cfg.sample_rate))

    def cache_config(self) -> dict:
        c = self.cfg
        return {"kind": "audio", "version": 1, "sr": c.sample_rate, "seconds": c.seconds, "features": self.features,
                "n_mels": c.n_mels, "n_fft": c.n_fft, "hop": c.hop_length}

    def feature_shape(self) -> tuple[int, ...]:
        if self.features == "waveform":
            return (self.n_samples,)
        return (self.cfg.n_mels, self.n_samples // self.cfg.hop_length + 1)

    def empty(self) -> np.ndarray:
        return np.zeros(self.n_samples, dtype=np.float32)

    def frames_read(self, sample_rate: int) -> int:
        """Frames decoded of a file at `sample_rate`: only as far as the model reads (and a margin for
        the resampling filter's edge), so a long or many-channel file costs no more memory than its
        first `seconds`. The server's memory budget counts the same."""
        return int(math.ceil(self.cfg.seconds * sample_rate * 1.1)) + 1

    def decode_path(self, path: Path) -> np.ndarray:
        return self.decode_bytes(path.read_bytes())

    def decode_bytes(self, data: bytes) -> np.ndarray:
        short = wav_truncation(data)
        if short:
            raise DecodeError(short)
        try:
            with sf.SoundFile(io.BytesIO(data)) as f:
                sr = f.samplerate
                wave = f.read(self.frames_read(sr), dtype="float32", always_2d=True)
        except Exception as e:  # soundfile raises LibsndfileError/RuntimeError/TypeError
            raise DecodeError(f"cannot decode audio: {e}") from None
        if wave.shape[0] == 0:
            raise DecodeError("audio has no samples")
        if not np.isfinite(wave).all():
            raise DecodeError("audio contains NaN or infinite samples")
        return self.to_array(wave.mean(axis=1), sr)

    def to_array(self, mono: np.ndarray, sr: int) -> np.ndarray:
        target = self.cfg.sample_rate
        if sr != target:
            g = math.gcd(int(sr), int(target))
            mono = resample_poly(mono, target // g, int(sr) // g).astype(np.float32)
        out = np.zeros(self.n_samples, dtype=np.float32)
        n = min(len(mono), self.n_samples)
        out[:n] = mono[:n]
        return out

    def finalize(self, waves: np.ndarray) -> np.ndarray:
        """[N, samples] waveforms -> stored features (log-mel float16, or normalised waveform)."""
        if self.features == "waveform":
            w = waves.astype(np.float32)
            w = (w - w.mean(1, keepdims=True)) / (w.std(1, keepdims=True) + 1e-7)
            return w.astype(np.float16)
        c = self.cfg
        out = np.empty((len(waves),) + self.feature_shape(), dtype=np.float16)
        for s in range(0, len(waves), 256):
            chunk = torch.from_numpy(np.ascontiguousarray(waves[s : s + 256]))
            out[s : s + 256] = log_mel(chunk, c.sample_rate, c.n_fft, c.hop_length, c.n_mels).numpy()
        return out
