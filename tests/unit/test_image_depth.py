"""16-bit and float images are windowed to 8 bits, never clipped (issue 17): a 12-bit CT slice in a
16-bit PNG keeps its four tissue levels apart and in order."""

import io

import numpy as np
import pytest
from PIL import Image

from mmfit.config import WINDOWS, ConfigError, ImageConfig, load_config
from mmfit.data.modalities.image import ImageProcessor, apply_window, window_bounds

LEVELS = (0, 1000, 2000, 3000)  # background, soft tissue, lesion, bone


def _slice_png() -> bytes:
    a = np.zeros((64, 64), np.uint16)
    a[8:56, 8:56] = LEVELS[1]
    a[20:30, 20:30] = LEVELS[2]
    a[40:50, 10:54] = LEVELS[3]
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    assert Image.open(io.BytesIO(buf.getvalue())).mode.startswith("I")  # really 16 bits on disk
    return buf.getvalue()


def _levels(arr: np.ndarray) -> list[int]:
    g = arr[0]  # grayscale: the three channels agree
    return [int(g[2, 2]), int(g[12, 12]), int(g[24, 24]), int(g[44, 30])]


@pytest.mark.parametrize("window", ["auto", [0, 3000], [0, 4095], [-1000, 3071]])
def test_a_16_bit_slice_keeps_four_levels_in_order(window):
    proc = ImageProcessor("scan", ImageConfig(size=64, fit="squash", window=window))
    out = _levels(proc.decode_bytes(_slice_png()))
    assert out == sorted(out) and len(set(out)) == 4, (window, out)


def test_the_old_decoding_clipped_what_the_window_keeps():
    img = Image.open(io.BytesIO(_slice_png()))
    clipped = np.asarray(img.convert("RGB"))[..., 0]
    assert len({int(clipped[12, 12]), int(clipped[24, 24]), int(clipped[44, 30])}) == 1  # the bug: all 255


def test_window_arithmetic_presets_and_float_images():
    assert list(apply_window(np.array([-5.0, 0.0, 50.0, 100.0, 1e9, np.nan]), 0.0, 100.0)) == [0, 0, 128, 255, 255, 0]
    assert window_bounds(np.zeros(4), "lung") == WINDOWS["lung"] == (-1350.0, 150.0)
    assert window_bounds(np.full(4, 7.0), "auto") == (7.0, 8.0)  # flat: no division by zero
    f = np.linspace(-2.0, 2.0, 64 * 64, dtype=np.float32).reshape(64, 64)
    f[0, 0] = np.nan
    buf = io.BytesIO()
    Image.fromarray(f).save(buf, format="TIFF")
    out = ImageProcessor("x", ImageConfig(size=32, fit="squash")).decode_bytes(buf.getvalue())
    assert out.shape == (3, 32, 32) and out.min() < 8 and out.max() > 247  # the ramp spans the range


def test_8_bit_images_are_unchanged_by_any_window():
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8), "L").save(buf, format="PNG")
    a = ImageProcessor("x", ImageConfig(size=40, window="auto")).decode_bytes(buf.getvalue())
    b = ImageProcessor("x", ImageConfig(size=40, window=[0, 10])).decode_bytes(buf.getvalue())
    assert np.array_equal(a, b)


def test_window_config_is_read_and_checked(tmp_path):
    base = {"data": {"columns": {"scan": "image"}, "targets": {"y": "classification"}}}
    cfg = load_config(base, ["data.image.window=[-1000, 3071]"])
    assert cfg.data.image.window == [-1000.0, 3071.0]
    assert load_config(base, ["data.image.window=bone"]).data.image.window == "bone"
    with pytest.raises(ConfigError, match="did you mean 'lung'"):
        load_config(base, ["data.image.window=lungs"])
    with pytest.raises(ConfigError, match="low < high"):
        load_config(base, ["data.image.window=[3000, 0]"])
