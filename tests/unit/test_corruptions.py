"""The robustness harness's corruptions, each on one value: what they do and that a seed fixes them."""

import io

import numpy as np
import soundfile as sf
from PIL import Image

from mmfit.evaluation.metrics import edit_distance
from mmfit.evaluation.robustness import FILE_CORRUPTIONS, TEXT_CORRUPTIONS


def _png(size=(40, 30), mode="RGB") -> bytes:
    """Stripes: edges for blur and JPEG to soften, flat runs for noise to show on."""
    a = np.zeros((size[1], size[0], 3), np.uint8)
    a[:, ::4] = (200, 120, 40)
    buf = io.BytesIO()
    Image.fromarray(a).convert(mode).save(buf, format="PNG")
    return buf.getvalue()


def _read(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32)


def test_image_corruptions_keep_the_size_grow_with_severity_and_repeat_under_a_seed():
    clean = _read(_png())
    for name, fn in FILE_CORRUPTIONS["image"].items():
        outs = [fn(_png(), s, np.random.default_rng(0)) for s in (1, 2, 3)]
        assert fn(_png(), 2, np.random.default_rng(0)) == outs[1], name  # the same seed, the same bytes
        diffs = [np.abs(_read(o) - clean).mean() for o in outs]
        assert all(_read(o).shape == clean.shape for o in outs)
        assert 0 < diffs[0] < diffs[2] and (name == "jpeg" or diffs[0] <= diffs[1] <= diffs[2]), (name, diffs)
    occluded = _read(FILE_CORRUPTIONS["image"]["occlusion"](_png((100, 100)), 2, np.random.default_rng(1)))
    stripes = _read(_png((100, 100))).sum(-1) == 0
    assert abs(((occluded.sum(-1) == 0) & ~stripes).mean() / (~stripes).mean() - 0.25) < 0.03  # a quarter blacked
    gray = FILE_CORRUPTIONS["image"]["gaussian_noise"](_png(mode="L"), 1, np.random.default_rng(0))
    assert Image.open(io.BytesIO(gray)).size == (40, 30)


def test_audio_noise_reaches_its_snr_and_clipping_its_level():
    t = np.arange(16000) / 16000
    wave = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, np.stack([wave, wave], 1), 16000, format="WAV", subtype="FLOAT")
    for s, snr in zip((1, 2, 3), (20, 10, 0)):
        noisy = FILE_CORRUPTIONS["audio"]["noise_snr"](buf.getvalue(), s, np.random.default_rng(0))
        out, sr = sf.read(io.BytesIO(noisy))
        noise = out[:, 0] - wave
        measured = 10 * np.log10((wave ** 2).mean() / (noise ** 2).mean())
        assert abs(measured - snr) < 0.5 and sr == 16000 and out.shape == (16000, 2)
    out, _ = sf.read(io.BytesIO(FILE_CORRUPTIONS["audio"]["clipping"](buf.getvalue(), 3, np.random.default_rng(0))))
    assert abs(np.abs(out).max() - 0.05) < 1e-6
    out, _ = sf.read(io.BytesIO(FILE_CORRUPTIONS["audio"]["resampling"](buf.getvalue(), 1, np.random.default_rng(0))))
    assert out.shape == (16000, 2)


def test_text_corruptions():
    text = "the quick brown fox jumps over the lazy dog " * 20
    typo = TEXT_CORRUPTIONS["typos"](text, 3, np.random.default_rng(0))
    letters = sum(c.isalpha() for c in text)
    assert 0.04 < edit_distance(typo, text) / letters < 0.2  # 10 % of the letters touched, about
    assert typo == TEXT_CORRUPTIONS["typos"](text, 3, np.random.default_rng(0))
    kept = TEXT_CORRUPTIONS["word_dropout"](text, 3, np.random.default_rng(0)).split()
    assert 0.45 < len(kept) / len(text.split()) < 0.75  # 40 % dropped, give or take


def test_a_file_held_in_its_cell_is_corrupted_like_a_file_on_disk(tmp_path):
    import pandas as pd

    from mmfit.config import load_config
    from mmfit.evaluation.robustness import corrupted

    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 24, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    img.save(tmp_path / "a.png")
    cfg = load_config({"data": {"columns": {"image": "image"}, "targets": {"y": {}}}})
    df = pd.DataFrame({"image": ["a.png", {"bytes": buf.getvalue(), "path": "a.png"}, buf.getvalue()],
                       "y": ["p", "q", "p"]})
    out = corrupted(df, cfg, None, "image", "gaussian_noise", 2, 0, tmp_path)["image"].tolist()
    assert all(isinstance(v, bytes) for v in out)  # each one corrupted, none passed through clean
    decoded = [np.asarray(Image.open(io.BytesIO(v)).convert("RGB"), dtype=float) for v in out]
    assert all(np.abs(d - np.asarray(img, dtype=float)).mean() > 1 for d in decoded)
