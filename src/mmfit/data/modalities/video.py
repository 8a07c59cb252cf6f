"""Video and volumes: a clip's frames (or a scan volume's slices), evenly spaced, each an image.

A `video` column reads
- video files through FFmpeg (PyAV: mp4, mov, mkv, webm, avi, ...),
- animated or multi-page images through Pillow (GIF, WebP, TIFF stacks; a still image is a clip of
  one frame),
- volumes: a multi-frame DICOM file, or a folder of DICOM slices (one series, in anatomical order),
  in modality units (CT: Hounsfield) through `data.image.window`, one window for the whole volume.

`data.video.frames` frames are taken over the whole clip: the middle frame of each of as many equal
segments (as TSN samples at test time; a clip with fewer frames repeats some). Each is fitted to a
square like an image (`data.image.fit`) -> uint8 [frames, 3, size, size]. `video_info` reads a file's
frame size, frame count and length from its header alone (the server's limits)."""

from __future__ import annotations

import io
from contextlib import contextmanager
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np
from PIL import Image

from mmfit.config import ImageConfig, VideoConfig
from mmfit.data.modalities.audio import pyav, resample_to, write_audio_stream
from mmfit.data.modalities.image import (DecodeError, ImageProcessor, dicom_8bit, dicom_pixels, dicom_series,
                                         dicom_window, image_size, is_dicom)


def frame_indices(n: int, count: int) -> list[int]:
    """`count` indices into n frames: the middle of each of `count` equal segments."""
    return [min(n - 1, int((i + 0.5) * n / count)) for i in range(count)]


class VideoInfo(NamedTuple):
    width: int
    height: int
    frames: Optional[int]  # None: the header does not say
    seconds: Optional[float]


@contextmanager
def _ffmpeg(source: bytes | Path):
    """(the container, its video stream) of a file FFmpeg reads; FFmpeg's errors, here or in the
    caller's block, become a DecodeError."""
    av = pyav("video")
    try:
        with av.open(io.BytesIO(source) if isinstance(source, bytes) else str(source), mode="r") as c:
            stream = next((st for st in c.streams if st.type == "video"), None)
            if stream is None:
                raise DecodeError("cannot decode video: the file has no video stream")
            yield c, stream
    except DecodeError:
        raise
    except Exception as e:  # FFmpeg's errors (InvalidDataError, ...)
        raise DecodeError(f"cannot decode video: {e}") from None


def _pillow(data: bytes) -> Optional[Image.Image]:
    """The file as a Pillow image (still, animated or multi-page), or None when Pillow cannot read it."""
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise DecodeError(f"image too large (decompression bomb guard): {e}") from None
    except Exception:
        return None
    return img


def video_info(source: bytes | Path) -> VideoInfo:
    """Frame size, frame count and length from the header alone (nothing decoded); raises DecodeError."""
    data = source if isinstance(source, bytes) else None
    if data is not None and is_dicom(data):
        w, h, n = image_size(data)
        return VideoInfo(w, h, n, None)
    img = _pillow(data) if data is not None else None
    if img is not None:
        return VideoInfo(img.size[0], img.size[1], int(getattr(img, "n_frames", 1)), None)
    with _ffmpeg(source) as (c, st):
        seconds = (float(st.duration * st.time_base) if st.duration is not None and st.time_base else
                   c.duration / 1_000_000 if c.duration is not None else None)
        n = int(st.frames) or None
        if n is None and seconds is not None and st.average_rate:
            n = int(round(seconds * float(st.average_rate)))
        return VideoInfo(int(st.codec_context.width), int(st.codec_context.height), n, seconds)


def ffmpeg_frames(source: bytes | Path, count: int, convert) -> list:
    """`count` evenly spaced frames of a video file, each through `convert` (a PIL image -> array) as
    it is decoded: at most one full-size frame in memory. The count comes from the header, else from
    the packets (demuxed, not decoded)."""
    with _ffmpeg(source) as (c, st):
        n = int(st.frames)
        if n <= 0:
            n = sum(1 for p in c.demux(st) if p.size)
    if n <= 0:
        raise DecodeError("cannot decode video: it has no frames")
    wanted = frame_indices(n, count)
    got: dict[int, np.ndarray] = {}
    last = None
    with _ffmpeg(source) as (c, st):
        st.thread_type = "AUTO"
        for i, frame in enumerate(c.decode(st)):
            if i in wanted:
                got[i] = last = convert(frame.to_image())
            if i >= wanted[-1]:
                break
    if not got:
        raise DecodeError("cannot decode video: no frame could be decoded")
    # a header that promised more frames than the file holds: the last decoded frame stands in
    return [got.get(i, last) for i in wanted]


def all_frames(data: bytes) -> list[Image.Image]:
    """Every frame of a clip at its own size (Pillow's animated images, else FFmpeg's videos): for
    corrupting a clip as a worse source would (evaluation/robustness.py)."""
    img = _pillow(data)
    if img is not None:
        out = []
        for i in range(int(getattr(img, "n_frames", 1))):
            img.seek(i)
            out.append(img.copy())
        return out
    with _ffmpeg(data) as (c, st):
        return [f.to_image() for f in c.decode(st)]


class VideoProcessor:
    kind = "video"

    def __init__(self, column: str, cfg: VideoConfig, image: ImageConfig):
        self.column = column
        self.cfg = cfg
        self.count = cfg.frames
        self.images = ImageProcessor(column, replace(image, size=cfg.size or image.size))

    def cache_config(self) -> dict:
        return {"kind": "video", "version": 1, "frames": self.count, "image": self.images.cache_config()}

    @property
    def side(self) -> int:
        return self.images.side

    def feature_shape(self) -> tuple[int, ...]:
        return (self.count, *self.images.feature_shape())

    def empty(self) -> np.ndarray:
        return np.zeros(self.feature_shape(), dtype=np.uint8)

    def finalize(self, arrays: np.ndarray) -> np.ndarray:
        return arrays  # uint8, scaled to [0, 1] when batched

    def decode_path(self, path: Path) -> np.ndarray:
        if path.is_dir():  # a DICOM series: a volume
            return self.series(path)
        data = path.read_bytes() if path.stat().st_size < 2**28 else None
        if data is None:  # a large video: FFmpeg reads the file, not a copy of it in memory
            return np.stack(ffmpeg_frames(path, self.count, self.images.to_array))
        return self.decode_bytes(data)

    def decode_bytes(self, data: bytes) -> np.ndarray:
        if is_dicom(data):
            values, ds = dicom_pixels(data)
            if values.ndim == 2 or (values.ndim == 3 and int(getattr(ds, "SamplesPerPixel", 1)) != 1):
                values = values[None]  # one slice (grey, or colour)
            return self.volume(values[frame_indices(len(values), self.count)], ds)
        img = _pillow(data)
        if img is not None:
            n = int(getattr(img, "n_frames", 1))
            out = []
            for i in frame_indices(n, self.count):
                try:
                    img.seek(i)
                    frame = img.copy()
                    frame.load()
                except Exception as e:
                    raise DecodeError(f"cannot decode image frame {i}: {e}") from None
                out.append(self.images.to_array(frame))
            return np.stack(out)
        return np.stack(ffmpeg_frames(data, self.count, self.images.to_array))

    def volume(self, values: np.ndarray, ds) -> np.ndarray:
        """DICOM slices [k, H, W] in modality units -> frames; one window for the whole volume."""
        if values.ndim == 4:  # colour frames, as the file stores them
            frames = [Image.fromarray(np.clip(v, 0, 255).astype(np.uint8)) for v in values]
        else:
            bounds = dicom_window(values, ds, self.images.cfg.window)
            frames = [Image.fromarray(dicom_8bit(v, ds, bounds)) for v in values]
        return np.stack([self.images.to_array(f) for f in frames])

    def series(self, folder: Path) -> np.ndarray:
        """A folder of DICOM slices -> `frames` evenly spaced slices in anatomical order."""
        files = dicom_series(folder)
        chosen = frame_indices(len(files), self.count)
        read = {}
        for i in dict.fromkeys(chosen):
            values, ds = dicom_pixels(files[i])
            read[i] = (values[len(values) // 2] if values.ndim == 3 and values.shape[-1] not in (3, 4) else values, ds)
        values = np.stack([read[i][0] for i in chosen])
        return self.volume(values, read[chosen[len(chosen) // 2]][1])


def encode_video(frames: np.ndarray, fps: float = 10.0, audio: Optional[tuple[np.ndarray, int]] = None,
                 container: str = "mp4") -> bytes:
    """uint8 frames [T, H, W, 3] (even sides) -> the bytes of a video file: 'mp4' (H.264, AAC audio) or
    'webm' (VP9, Opus audio), with a mono audio track when `audio` = (float samples [-1, 1], rate) is
    given. For the tests, the benchmark and the demo."""
    av = pyav("video")
    vcodec, acodec, arate = {"mp4": ("libx264", "aac", None), "webm": ("libvpx-vp9", "libopus", 48000)}[container]
    buf = io.BytesIO()
    rate = Fraction(fps).limit_denominator(1000)
    with av.open(buf, mode="w", format=container) as c:
        vs = c.add_stream(vcodec, rate=rate)
        vs.width, vs.height, vs.pix_fmt = int(frames.shape[2]), int(frames.shape[1]), "yuv420p"
        vs.options = {"crf": "18"} if vcodec == "libx264" else {"crf": "20", "b": "0"}
        a_st = None
        if audio is not None:
            wave, sr = audio
            arate = arate or sr
            wave = resample_to(np.asarray(wave, np.float32), sr, arate)[:, None]
            a_st = c.add_stream(acodec, rate=arate, layout="mono")
        for f in frames:
            for packet in vs.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                c.mux(packet)
        for packet in vs.encode(None):
            c.mux(packet)
        if a_st is not None:
            write_audio_stream(av, c, a_st, wave, arate)
    return buf.getvalue()
