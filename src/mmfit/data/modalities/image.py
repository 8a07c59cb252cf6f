"""Images: decode with Pillow (alpha on white, grayscale to RGB), fit to a square, uint8 CHW.

16-bit and float images (scans out of a PACS: 12 bits of CT in a 16-bit PNG or TIFF) are scaled to
8 bits through a window (`data.image.window`: [low, high], a CT preset, `auto`: one window for the
whole column, fitted on a sample of its training rows (`fit_window`) and stored with the run, or
`per_image`: each image's robust percentiles), never clipped at 255, before anything else sees them.
One window for the column keeps absolute levels: a scan at 1000 and one at 2000 stay apart."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image, ImageOps

from mmfit.config import WINDOWS, ImageConfig


class DecodeError(Exception):
    """A file could not be decoded; the message says why."""


class ImageProcessor:
    kind = "image"

    def __init__(self, column: str, cfg: ImageConfig):
        self.column = column
        self.cfg = cfg
        # `auto`: the column's (low, high), fitted on training rows (fit_window) or read from a run;
        # None until then, or where the training rows hold no image of more than 8 bits
        self.column_window: Optional[tuple[float, float]] = None

    @property
    def window(self):
        """The window deep images go through: the fitted column window under `auto`, else as configured
        (`auto` before it is fitted, or without one: each image's own percentiles)."""
        if self.cfg.window == "auto" and self.column_window is not None:
            return list(self.column_window)
        return self.cfg.window

    def cache_config(self) -> dict:
        return {"kind": "image", "version": 2, "size": self.cfg.size, "fit": self.cfg.fit, "window": self.window}

    def fit_window(self, files: Sequence, log=None, values_per_image: int = 4096, seed: int = 0) -> None:
        """`auto`: one window for the column, the 0.5th to 99.5th percentile of the pooled values of
        the deep images (more than 8 bits; DICOM without a window of its own) among `files` (paths or
        bytes of training rows; a sample is enough: a few hundred). Unreadable files are left to the
        decoding, which reports them. Nothing is fitted where none of them is deep."""
        if self.cfg.window != "auto":
            return
        rng = np.random.default_rng(seed)
        pooled, deep = [], 0
        for f in files:
            values = _deep_values(f)
            if values is None:
                continue
            values = values[np.isfinite(values)].ravel()
            if values.size:
                deep += 1
                pooled.append(values if values.size <= values_per_image else rng.choice(values, values_per_image))
        if not pooled:
            return
        lo, hi = np.percentile(np.concatenate(pooled), [0.5, 99.5])
        self.column_window = (float(lo), float(hi) if hi > lo else float(lo) + 1.0)
        if log:
            log(f"image column '{self.column}': {deep} training images of more than 8 bits; one window for the "
                f"column, [{self.column_window[0]:g}, {self.column_window[1]:g}] (data.image.window: auto; "
                "per_image stretches each image to its own range)")

    @property
    def side(self) -> int:
        return self.cfg.size

    def feature_shape(self) -> tuple[int, ...]:
        return (3, self.cfg.size, self.cfg.size)

    def empty(self) -> np.ndarray:
        return np.zeros(self.feature_shape(), dtype=np.uint8)

    def decode_path(self, path: Path) -> np.ndarray:
        if path.is_dir():  # a DICOM series: its middle slice
            return self.to_array(series_image(path, self.cfg.window, self.column_window))
        return self.decode_bytes(path.read_bytes())

    def decode_bytes(self, data: bytes) -> np.ndarray:
        if is_dicom(data):
            return self.to_array(dicom_image(data, self.cfg.window, self.column_window))
        try:
            img = Image.open(io.BytesIO(data))
            img.load()
        except Image.DecompressionBombError as e:
            raise DecodeError(f"image too large (decompression bomb guard): {e}") from None
        except Exception as e:  # Pillow raises many types for corrupt data
            raise DecodeError(f"cannot decode image: {e}") from None
        return self.to_array(img)

    def to_array(self, img: Image.Image) -> np.ndarray:
        img = shrink(img, 2 * self.cfg.size)
        if img.mode in DEEP:
            img = to_8bit(img, self.window)
        img = ImageOps.exif_transpose(img)
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            img = Image.alpha_composite(white, rgba)
        img = img.convert("RGB")  # grayscale, palette, CMYK, 16-bit -> RGB
        s = self.cfg.size
        if self.cfg.fit == "squash":
            img = img.resize((s, s), Image.BILINEAR)
        elif self.cfg.fit == "crop":
            img = ImageOps.fit(img, (s, s), Image.BILINEAR)
        else:
            img = ImageOps.pad(img, (s, s), Image.BILINEAR, color=(255, 255, 255))
        return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy()

    def finalize(self, arrays: np.ndarray) -> np.ndarray:
        return arrays  # stored as uint8; scaled to [0, 1] when batched


def is_dicom(data: bytes) -> bool:
    """A DICOM file (Part 10: 128-byte preamble, then 'DICM')."""
    return len(data) >= 132 and data[128:132] == b"DICM"


def _pydicom():
    try:
        import pydicom
    except ImportError:
        raise DecodeError("a DICOM file: reading it needs pydicom: pip install 'mmfit[dicom]'") from None
    return pydicom


def dicom_pixels(data: bytes) -> tuple[np.ndarray, object]:
    """(the stored values in modality units, Hounsfield units for CT: the rescale slope and intercept
    applied; the dataset). A multi-frame file gives [frames, H, W]. Nothing of the header is kept
    or reported (patient tags never reach a run directory or a log)."""
    pydicom = _pydicom()
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        arr = ds.pixel_array
    except Exception as e:  # pydicom raises many types; the message names no tag values
        raise DecodeError(f"cannot decode DICOM: {type(e).__name__}: {str(e)[:200]}") from None
    from pydicom.pixels import apply_rescale

    if int(getattr(ds, "SamplesPerPixel", 1)) != 1:  # colour (ultrasound, photos): as the file stores it
        return arr, ds
    return apply_rescale(arr, ds).astype(np.float64), ds


def dicom_image(data: bytes, window, column: Optional[tuple[float, float]] = None) -> Image.Image:
    """A DICOM slice as an 8-bit image: modality values (CT: HU) through `window`; `auto` takes the
    file's own window (Window Center / Width) when it has one, else the column's (`column`, fitted on
    training rows), else robust percentiles. MONOCHROME1
    (white is low) is inverted; of a multi-frame file, the middle frame (a volume's slices are a
    sequence: frames)."""
    values, ds = dicom_pixels(data)
    if values.ndim == 4 or (values.ndim == 3 and int(getattr(ds, "SamplesPerPixel", 1)) == 1):
        values = values[len(values) // 2]
    if values.ndim == 3:  # colour
        return Image.fromarray(np.clip(values, 0, 255).astype(np.uint8) if values.dtype != np.uint8 else values)
    return Image.fromarray(dicom_8bit(values, ds, dicom_window(values, ds, window, column)))


def dicom_window(values: np.ndarray, ds, window, column: Optional[tuple[float, float]] = None) -> tuple[float, float]:
    """(low, high) of `window` for DICOM values: `auto` is the file's own Window Center / Width when it
    has one, else the column's window where one was fitted, else the values' robust percentiles (a
    volume: over all its slices, so they agree)."""
    if window == "auto" and "WindowCenter" in ds and "WindowWidth" in ds:
        c, w = (float(v[0] if isinstance(v, Sequence) else v) for v in (ds.WindowCenter, ds.WindowWidth))
        return c - w / 2, c + w / 2
    if window == "auto" and column is not None:
        return column
    return window_bounds(values, window)


def dicom_8bit(values: np.ndarray, ds, bounds: tuple[float, float]) -> np.ndarray:
    """Grayscale DICOM values through a window to uint8; MONOCHROME1 (white is low) inverted."""
    out = apply_window(values, *bounds)
    return 255 - out if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1" else out


def dicom_series(folder: Path) -> list[bytes]:
    """A folder of DICOM slices -> their files' bytes in anatomical order: by position along the
    slices' normal (Image Position · (row x column direction)), else Instance Number. Files that
    are not DICOM are passed over; two series in one folder, or none, are refused."""
    pydicom = _pydicom()
    slices = []
    for f in sorted(folder.iterdir()):
        data = f.read_bytes() if f.is_file() else b""
        if not is_dicom(data):
            continue
        try:
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        except Exception as e:
            raise DecodeError(f"cannot decode DICOM file '{f.name}' of the series: {type(e).__name__}") from None
        slices.append((ds, data))
    if not slices:
        raise DecodeError(f"no DICOM file in the folder {folder}")
    series = {str(getattr(ds, "SeriesInstanceUID", "")) for ds, _ in slices}
    if len(series) > 1:
        raise DecodeError(f"the folder {folder} holds {len(series)} DICOM series; one series per folder")

    def place(ds) -> tuple:
        pos, ori = getattr(ds, "ImagePositionPatient", None), getattr(ds, "ImageOrientationPatient", None)
        if pos is not None and ori is not None and len(pos) == 3 and len(ori) == 6:
            normal = np.cross(np.asarray(ori[:3], float), np.asarray(ori[3:], float))
            return (0, float(np.dot(normal, np.asarray(pos, float))))
        return (1, float(getattr(ds, "InstanceNumber", 0) or 0))

    return [data for _, data in sorted(slices, key=lambda sd: place(sd[0]))]


def series_image(folder: Path, window, column: Optional[tuple[float, float]] = None) -> Image.Image:
    """A DICOM series as one image: its middle slice in anatomical order, windowed as a single file."""
    files = dicom_series(folder)
    return dicom_image(files[len(files) // 2], window, column)


def image_size(data: bytes) -> tuple[int, int, int]:
    """(width, height, frames) from the header alone (Pillow's, or DICOM's Rows / Columns)."""
    if is_dicom(data):
        pydicom = _pydicom()
        try:
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
            return int(ds.Columns), int(ds.Rows), int(getattr(ds, "NumberOfFrames", 1) or 1)
        except Exception as e:
            raise DecodeError(f"cannot decode DICOM: {type(e).__name__}") from None
    with Image.open(io.BytesIO(data)) as img:
        return img.size[0], img.size[1], int(getattr(img, "n_frames", 1))


DEEP = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")  # Pillow's 16-bit, 32-bit integer and float modes


def _deep_values(f) -> Optional[np.ndarray]:
    """The stored values of one file (a path or bytes) where a window applies to it: a Pillow image of
    more than 8 bits, or a DICOM slice without a window of its own (modality units); else None."""
    try:
        if isinstance(f, (bytes, bytearray)):
            data = bytes(f)
        else:
            p = Path(f)
            if p.is_dir():
                return None  # a DICOM series: its own window, or its volume's percentiles
            with open(p, "rb") as fh:
                data = fh.read(132)
            if is_dicom(data):
                data = p.read_bytes()
        if is_dicom(data):
            values, ds = dicom_pixels(data)
            if "WindowCenter" in ds and "WindowWidth" in ds or values.ndim != 2:
                return None
            return values
        with Image.open(io.BytesIO(data) if isinstance(f, (bytes, bytearray)) else f) as img:
            if img.mode not in DEEP:
                return None
            img = shrink(img, 256)
            return np.asarray(img).astype(np.float64)
    except (OSError, DecodeError, ValueError, Image.DecompressionBombError):
        return None


def window_bounds(values: np.ndarray, window) -> tuple[float, float]:
    """(low, high) of a window: given, a preset's, or (auto before a column window is fitted,
    per_image) the finite values' 0.5th and 99.5th percentiles (a flat image: its value and one above)."""
    if isinstance(window, str) and window not in ("auto", "per_image"):
        return WINDOWS[window]
    if not isinstance(window, str):
        return float(window[0]), float(window[1])
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [0.5, 99.5])
    return float(lo), float(hi) if hi > lo else float(lo) + 1.0


def apply_window(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Values -> uint8: low and below 0, high and above 255, linear between; NaN 0."""
    x = (np.nan_to_num(values, nan=low, posinf=high, neginf=low) - low) / (high - low)
    return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def to_8bit(img: Image.Image, window) -> Image.Image:
    """A 16-bit, 32-bit or float single-channel image as 8-bit grayscale through `window`."""
    a = np.asarray(img).astype(np.float64)  # any byte order
    return Image.fromarray(apply_window(a, *window_bounds(a, window)))  # uint8: mode L


REDUCIBLE = ("L", "LA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "I", "I;16", "F")


def shrink(img: Image.Image, at_least: int) -> Image.Image:
    """A large image reduced by an integer factor (box filter over k x k blocks: an exact average, not
    a resampling) while both sides stay >= `at_least`: the copies that follow (orientation, mode,
    alpha, resizing) are then small, so a 20-megapixel photo costs its decoded size once, not five
    times. Exif orientation is kept (the copy keeps the image's info)."""
    k = min(img.size) // max(1, at_least)
    if k < 2 or img.mode not in REDUCIBLE:
        return img
    if img.mode not in ("RGBA", "LA"):
        return img.reduce(k)
    # with alpha, Pillow's reduce first makes a premultiplied copy of the whole image: strip by strip
    # instead (whole blocks of k x k; the last < k columns and rows are left out)
    w, h = (img.size[0] // k) * k, (img.size[1] // k) * k
    out = Image.new(img.mode, (w // k, h // k))
    step = k * max(1, 2_000_000 // (w * k))  # strips of about 2 M pixels
    for y in range(0, h, step):
        out.paste(img.crop((0, y, w, min(h, y + step))).reduce(k), (0, y // k))
    out.info = dict(img.info)  # keeps the Exif orientation
    return out
