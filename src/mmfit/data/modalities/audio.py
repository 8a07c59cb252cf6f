"""Audio: decode, mix to mono, resample, crop/pad, log-mel via torch.stft.

Decoding: libsndfile (soundfile) for what it reads fast (WAV, FLAC, OGG, MP3), FFmpeg through PyAV
for the rest: AAC/M4A (phones), WebM/Opus (browsers' MediaRecorder), AMR, and anything else FFmpeg
reads. Either way only the first `frames_read` frames are decoded, and `audio_info` reads the
frame count, channels and rate from the header alone (the server's limits)."""

from __future__ import annotations

import io
import math
import struct
from contextlib import contextmanager
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Callable, NamedTuple, Optional

import numpy as np
import soundfile as sf
import torch

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


class AudioInfo(NamedTuple):
    frames: Optional[int]  # None: the header does not say (a live recording's WebM)
    channels: int
    samplerate: int

    @property
    def duration(self) -> Optional[float]:
        return None if self.frames is None else self.frames / self.samplerate


def pyav(what: str = "audio"):
    """The `av` module (FFmpeg); a core dependency, so its absence is named, not assumed."""
    try:
        import av
    except ImportError:  # an environment without it reads what libsndfile reads
        more = " not WAV, FLAC, OGG or MP3, and" if what == "audio" else ""
        raise DecodeError(f"cannot decode {what}:{more} PyAV (FFmpeg) is not installed for it: "
                          "pip install av") from None
    return av


class NoAudioStream(DecodeError):
    """A file without sound: for a video's sound track (`source`) the modality is absent, not an error."""


def _stream(container):
    stream = next((st for st in container.streams if st.type == "audio"), None)
    if stream is None:
        raise NoAudioStream("cannot decode audio: the file has no audio stream")
    return stream


@contextmanager
def _ffmpeg(source, first: Exception):
    """(av, the container, its audio stream) of a file libsndfile could not read (`first`: why); any
    error of FFmpeg's, here or in the caller's block, becomes a DecodeError naming both reasons."""
    av = pyav()
    try:
        with av.open(source, mode="r") as c:
            yield av, c, _stream(c)
    except DecodeError:
        raise
    except Exception as e:  # FFmpeg's errors (InvalidDataError, ...)
        raise DecodeError(f"cannot decode audio: {first}; FFmpeg: {e}") from None


def audio_info(source: bytes | Path) -> AudioInfo:
    """Frames, channels and rate from a file's header (its bytes, or its path: only the header is
    read), nothing decoded; raises DecodeError."""
    src = io.BytesIO(source) if isinstance(source, bytes) else str(source)
    try:
        i = sf.info(src)
        return AudioInfo(int(i.frames), int(i.channels), int(i.samplerate))
    except Exception as e:  # soundfile raises LibsndfileError/RuntimeError/TypeError
        first = e
    if isinstance(src, io.BytesIO):
        src.seek(0)
    with _ffmpeg(src, first) as (av, c, st):
        rate, channels = int(st.codec_context.sample_rate or 0), int(st.codec_context.channels or 0)
        if rate <= 0 or channels <= 0:
            raise DecodeError("cannot decode audio: the header gives no sample rate or channel count")
        seconds = (float(st.duration * st.time_base) if st.duration is not None and st.time_base else
                   c.duration / av.time_base if c.duration is not None else None)
        return AudioInfo(None if seconds is None else int(round(seconds * rate)), channels, rate)


def read_audio(data: bytes, frames: Callable[[int], int]) -> tuple[np.ndarray, int]:
    """The first `frames(sample rate)` frames -> (float32 [frames, channels], sample rate); raises
    DecodeError."""
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            return f.read(frames(f.samplerate), dtype="float32", always_2d=True), int(f.samplerate)
    except Exception as e:  # soundfile raises LibsndfileError/RuntimeError/TypeError
        first = e
    with _ffmpeg(io.BytesIO(data), first) as (av, c, st):
        to_float = av.AudioResampler(format="fltp")  # planar float32, the stream's own layout and rate
        parts, n, rate = [], 0, int(st.codec_context.sample_rate or 0)
        max_frames = frames(rate or 48000)
        for frame in c.decode(st):
            for f in to_float.resample(frame):
                a = f.to_ndarray()  # [channels, samples]
                parts.append(a[:, : max_frames - n])
                n += parts[-1].shape[1]
                rate = int(f.sample_rate)
            if n >= max_frames:
                break
    if not parts:
        return np.zeros((0, 1), np.float32), max(rate, 1)
    return np.ascontiguousarray(np.concatenate(parts, axis=1).T, dtype=np.float32), rate


def encode_audio(wave: np.ndarray, sample_rate: int, container: str) -> bytes:
    """float [-1, 1] samples ([n] or [n, channels]) -> the bytes of a file: 'wav' and 'flac' by
    libsndfile; 'm4a' (AAC), 'webm' (Opus, 48 kHz), 'amr' (AMR-NB, 8 kHz mono) by FFmpeg, resampled
    to what the codec takes (how phones and browsers record)."""
    wave = np.asarray(wave, np.float32)
    if container in ("wav", "flac"):
        buf = io.BytesIO()
        sf.write(buf, wave, sample_rate, format=container.upper())
        return buf.getvalue()
    av = pyav()
    fmt, codec, rate, bitrate = {"m4a": ("ipod", "aac", None, 64000), "webm": ("webm", "libopus", 48000, 48000),
                                 "amr": ("amr", "libopencore_amrnb", 8000, 12200)}[container]
    wave = wave[:, None] if wave.ndim == 1 else wave
    if container == "amr":
        wave = wave.mean(1, keepdims=True)
    rate = rate or sample_rate
    wave = resample_to(wave, sample_rate, rate)
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=fmt) as c:
        st = c.add_stream(codec, rate=rate, layout="mono" if wave.shape[1] == 1 else "stereo")
        st.bit_rate = bitrate
        write_audio_stream(av, c, st, wave, rate)
    return buf.getvalue()


def resample_to(wave: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Samples ([n] or [n, channels]) at `rate` -> at `target` (polyphase), float32."""
    if rate == target:
        return wave.astype(np.float32, copy=False)
    g = math.gcd(int(rate), int(target))
    from scipy.signal import resample_poly  # here, not at the top: scipy.signal takes 1.2 s to import

    return resample_poly(wave, int(target) // g, int(rate) // g, axis=0).astype(np.float32)


def write_audio_stream(av, container, stream, wave: np.ndarray, rate: int) -> None:
    """float samples [n, channels] at `rate` (the stream's) -> encoded packets muxed into `container`."""
    layout = "mono" if wave.shape[1] == 1 else "stereo"
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave.T), format="fltp", layout=layout)
    frame.sample_rate, frame.pts, frame.time_base = rate, 0, Fraction(1, rate)  # the encoder's priming
    # (AAC's 1024 samples) then goes into the file's edit list, which decoders skip
    to_codec = av.AudioResampler(format=stream.codec_context.format.name, layout=stream.codec_context.layout.name,
                                 rate=rate, frame_size=stream.codec_context.frame_size or None)
    for f in to_codec.resample(frame) + to_codec.resample(None):
        for packet in stream.encode(f):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)


class AudioProcessor:
    kind = "audio"
    side = None  # no image side

    def __init__(self, column: str, cfg: AudioConfig, features: str = "logmel", track: bool = False):
        self.column = column
        self.cfg = cfg
        self.track = track  # a video's sound track: a video without sound has the modality absent
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

    def decode_bytes(self, data: bytes) -> Optional[np.ndarray]:
        """The features, or None for a sound track of a video without sound (absent, no error)."""
        short = wav_truncation(data)
        if short:
            raise DecodeError(short)
        try:
            wave, sr = read_audio(data, self.frames_read)
        except NoAudioStream:
            if self.track:
                return None
            raise
        if wave.shape[0] == 0:
            raise DecodeError("audio has no samples")
        if not np.isfinite(wave).all():
            raise DecodeError("audio contains NaN or infinite samples")
        return self.to_array(wave.mean(axis=1), sr)

    def to_array(self, mono: np.ndarray, sr: int) -> np.ndarray:
        mono = resample_to(mono, sr, self.cfg.sample_rate)
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
