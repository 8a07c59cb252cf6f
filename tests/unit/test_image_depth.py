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


def _level_png(path, level: int, rng) -> None:
    """A 16-bit scan at one level (noise and a brighter blob at a random place): the level is the class."""
    a = level + rng.normal(0, 40, (48, 48))
    y, x = rng.integers(8, 32, 2)
    a[y:y + 10, x:x + 10] += 600
    Image.fromarray(np.clip(a, 0, 65535).astype(np.uint16)).save(path)


def _two_level_set(root, n=60):
    import pandas as pd

    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        level = (1000, 2000)[i % 2]
        _level_png(root / f"{i}.png", level, rng)
        rows.append({"scan": f"{i}.png", "y": f"L{level}"})
    pd.DataFrame(rows).to_csv(root / "m.csv", index=False)
    return root / "m.csv"


def test_auto_is_one_window_for_the_column_fitted_on_training_rows(tmp_path):
    """Two 16-bit scans at levels 1000 and 2000 look alike under per-image stretching and apart under
    the column's one window (issue 36); the window is stored with the run and used again to predict."""
    from mmfit.data.prepare import Preprocessor, fit_image_windows
    from mmfit.data.modalities.image import ImageProcessor

    m = _two_level_set(tmp_path / "d")
    cfg = load_config({"data": {"manifest": str(m), "columns": {"scan": "image"}, "targets": {"y": "classification"},
                                "image": {"size": 32, "fit": "squash"}},
                       "model": {"encoders": {"scan": {"name": "scratch"}}}})
    pre = Preprocessor(cfg)
    fit_image_windows(pre, cfg, None, log=lambda *a: None)
    lo, hi = pre.files["scan"].column_window
    assert 900 < lo < 1000 and 2500 < hi < 2800  # the pooled percentiles of both levels
    a = pre.files["scan"].decode_path(tmp_path / "d" / "0.png")  # level 1000
    b = pre.files["scan"].decode_path(tmp_path / "d" / "1.png")  # level 2000
    assert b.mean() > a.mean() + 60
    per_image = ImageProcessor("scan", ImageConfig(size=32, fit="squash", window="per_image"))
    pa, pb = per_image.decode_path(tmp_path / "d" / "0.png"), per_image.decode_path(tmp_path / "d" / "1.png")
    assert abs(float(pa.mean()) - float(pb.mean())) < 15  # the level is gone
    state = pre.save(tmp_path, lambda m: tmp_path)
    assert state["modalities"]["scan"]["window"] == [lo, hi]
    again = Preprocessor.load(cfg, state, tmp_path)
    assert again.files["scan"].column_window == (lo, hi)
    assert np.array_equal(again.files["scan"].decode_path(tmp_path / "d" / "1.png"), b)
    # 8-bit images only: nothing is fitted, and nothing changes
    eight = ImageProcessor("x", ImageConfig(size=16))
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(buf, format="PNG")
    eight.fit_window([buf.getvalue()])
    assert eight.column_window is None


@pytest.mark.slow
def test_the_two_level_16_bit_set_is_learned_with_the_default_window(tmp_path):
    """The 16-bit two-level set of issue 36: 0.5 accuracy when each image is stretched to its own
    range (no model can tell the classes apart), at least 0.9 with the default window."""
    import json

    from rich.console import Console

    import mmfit

    m = _two_level_set(tmp_path / "d", n=80)
    scores = {}
    for window in ("auto", "per_image"):
        run = mmfit.train({"data": {"manifest": str(m), "cache_dir": str(tmp_path / "cache"),
                                    "columns": {"scan": "image"}, "targets": {"y": "classification"},
                                    "image": {"size": 32, "window": window}, "split": {"val": 0.2, "test": 0.25}},
                           "model": {"dim": 32, "encoders": {"scan": {"name": "scratch", "layers": 1, "heads": 2,
                                                                      "patch": 8}}},
                           "train": {"epochs": 15, "batch_size": 8, "lr": 3e-3, "output_dir": str(tmp_path / "runs"),
                                     "run_name": window}},
                          console=Console(quiet=True))
        scores[window] = json.loads((run / "eval" / "test.json").read_text())["metrics"]["y"]["accuracy"]
    assert scores["auto"] >= 0.9 and scores["per_image"] <= 0.75, scores
