"""Video as a column role (issue 17): evenly spaced frames from MP4 / WebM / GIF files, the frame
encoder (an image encoder per frame, attention over time), its augmentation, role inference and
the config of a sound-track column."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from mmfit.config import (AugmentConfig, ConfigError, FinetuneConfig, ImageConfig, VideoConfig, input_fields,
                          load_config)
from mmfit.data.augment import Augmenter
from mmfit.data.manifest import check_columns
from mmfit.data.modalities.audio import read_audio
from mmfit.data.modalities.image import DecodeError
from mmfit.data.modalities.video import VideoProcessor, encode_video, frame_indices, video_info
from mmfit.models.encoders import EncoderSpec, build_encoder
from mmfit.models.finetune import apply_strategy, backbone, is_frozen


def _bar_clip(n: int = 20, side: int = 48) -> np.ndarray:
    """Frame t holds a bright bar at column 2t (a position that says which frame it is)."""
    frames = np.zeros((n, side, side, 3), np.uint8)
    for t in range(n):
        frames[t, :, 2 * t:2 * t + 2] = 255
    return frames


def _bar_position(frame: np.ndarray) -> float:
    """Column of the bar in a decoded [3, S, S] frame, in units of the source's columns."""
    cols = frame.astype(float).mean((0, 1))
    return float((cols * np.arange(len(cols))).sum() / cols.sum())


def test_frame_indices_take_the_middle_of_equal_segments():
    assert frame_indices(20, 4) == [2, 7, 12, 17]
    assert frame_indices(3, 6) == [0, 0, 1, 1, 2, 2]  # a short clip repeats frames, in order
    assert frame_indices(1, 3) == [0, 0, 0]


@pytest.mark.parametrize("container", ["mp4", "webm"])
def test_a_two_second_video_yields_the_configured_frames_in_order(container):
    wave = 0.3 * np.sin(2 * np.pi * 440 * np.arange(32000) / 16000)
    data = encode_video(_bar_clip(20), fps=10, audio=(wave, 16000), container=container)
    info = video_info(data)
    assert (info.width, info.height) == (48, 48) and abs(info.seconds - 2.0) < 0.05
    proc = VideoProcessor("clip", VideoConfig(frames=5), ImageConfig(size=48))
    x = proc.decode_bytes(data)
    assert x.shape == (5, 3, 48, 48) and x.dtype == np.uint8
    # frames 2, 6, 10, 14, 18: the bar at columns 2t (+ 0.5, its middle)
    assert np.allclose([_bar_position(f) for f in x], [4.5, 12.5, 20.5, 28.5, 36.5], atol=1.0)
    sound, rate = read_audio(data, lambda sr: 2 * sr)  # its sound track, as an audio column reads it
    assert sound.shape[0] > 1.5 * rate


def test_animated_and_still_images_are_clips_too():
    frames = [Image.fromarray(f) for f in _bar_clip(8, 32)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    proc = VideoProcessor("clip", VideoConfig(frames=4), ImageConfig(size=32))
    x = proc.decode_bytes(buf.getvalue())
    assert x.shape == (4, 3, 32, 32)
    assert np.allclose([_bar_position(f) for f in x], [2.5, 6.5, 10.5, 14.5], atol=1.0)  # frames 1, 3, 5, 7
    still = io.BytesIO()
    frames[3].save(still, format="PNG")
    y = proc.decode_bytes(still.getvalue())
    assert all(np.array_equal(y[0], f) for f in y)  # one frame, held


def test_a_broken_video_is_a_clear_error():
    data = encode_video(_bar_clip(10, 32), fps=10)
    proc = VideoProcessor("clip", VideoConfig(frames=4), ImageConfig(size=32))
    with pytest.raises(DecodeError, match="cannot decode video"):
        proc.decode_bytes(b"\x00\x01 not a video at all" * 50)
    with pytest.raises(DecodeError, match="video"):
        proc.decode_bytes(data[: len(data) // 3])


def _video_encoder(strategy: str = "full"):
    spec = EncoderSpec("video", dim=16, layers=1, heads=2, patch=4, frames=4)
    enc = build_encoder("scratch", spec)
    return apply_strategy(enc, FinetuneConfig(strategy=strategy))


def test_frame_encoder_starts_as_the_mean_of_its_frames_and_its_pooling_always_trains():
    torch.manual_seed(0)
    enc = _video_encoder("frozen")
    assert is_frozen(backbone(enc)) and not is_frozen(enc)  # the image encoder frozen, the pooling trains
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert trainable and not any(n.startswith("frames.") for n in trainable)
    backbone(enc).eval()  # as MultimodalModel keeps a frozen encoder
    x = torch.rand(3, 4, 3, 16, 16)
    out = enc({"x": x})
    assert out.tokens.shape == (3, 4, 16) and out.mask.all() and out.pooled.shape == (3, 16)
    assert torch.allclose(out.pooled, out.tokens.mean(1), atol=1e-6)  # the scorer starts at zero
    # the per-frame vectors computed once (a frozen image encoder) give the same outputs
    cached = enc(enc.front_outputs({"x": x}))
    assert torch.allclose(cached.pooled, out.pooled, atol=1e-6)
    # gradients still reach the pixels when asked (attacks, integrated gradients)
    x.requires_grad_(True)  # (not pooled.sum(): layer-normed tokens sum to a constant, its gradient is 0)
    (enc({"x": x}).pooled * torch.linspace(-1, 1, 16)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_temporal_order_is_learnable_by_the_pooling():
    """Two classes with the same frames in opposite order: the mean of the frames cannot tell them
    apart, the pooling with positions in time can (a few hundred steps on frozen frame features)."""
    torch.manual_seed(0)
    enc = _video_encoder("frozen")
    backbone(enc).eval()
    head = torch.nn.Linear(16, 2)
    base = torch.rand(8, 4, 3, 16, 16)
    x = torch.cat([base, base.flip(1)])
    y = torch.tensor([0] * 8 + [1] * 8)
    feats = enc.front_outputs({"x": x})
    opt = torch.optim.Adam([p for p in enc.parameters() if p.requires_grad] + list(head.parameters()), lr=1e-2)
    for _ in range(300):
        loss = torch.nn.functional.cross_entropy(head(enc(feats).pooled), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (head(enc(feats).pooled).argmax(1) == y).float().mean() == 1.0


def test_video_augmentation_draws_once_per_clip_and_drops_frames_to_neighbours():
    cfg = AugmentConfig()
    cfg.image.hflip, cfg.video.image = 1.0, True
    aug = Augmenter(cfg, {"clip": "video"})
    x = torch.rand(2, 4, 3, 8, 8)
    out = aug.video(x, torch.Generator().manual_seed(0))
    assert torch.allclose(out, x.flip(-1))  # every frame of every clip flipped alike
    cfg = AugmentConfig()
    cfg.video.frame_drop = 0.5
    aug = Augmenter(cfg, {"clip": "video"})
    assert aug.touches("clip")
    x = torch.arange(2 * 6, dtype=torch.float32).view(2, 6, 1, 1, 1).expand(2, 6, 3, 2, 2).clone()
    out = aug.video(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape
    for b in range(2):
        src = out[b, :, 0, 0, 0] - 6 * b  # which frame each position now shows
        kept = {int(v) for v in src}
        assert kept < set(range(6)) or kept == set(range(6))
        for t, s in enumerate(src.long().tolist()):  # the nearest kept frame stands in
            assert min(abs(t - k) for k in kept) == abs(t - s)
    assert not Augmenter(AugmentConfig(), {"clip": "video"}).touches("clip")


def test_sound_track_columns_are_checked():
    base = {"data": {"columns": {"clip": "video", "sound": {"role": "audio", "source": "clip"}},
                     "targets": {"y": "classification"}}}
    cfg = load_config(base)
    assert cfg.data.columns["sound"].source == "clip"
    assert cfg.model.encoders["clip"].name == "efficientnet-lite0"  # the packaged image encoder, per frame
    alone = {"data": {"columns": {"sound": {"role": "audio", "source": "clip"}}, "targets": {"y": "classification"}}}
    assert load_config(alone).data.columns["sound"].source == "clip"  # a sound track without its video
    df = pd.DataFrame({"clp": ["a.mp4"], "y": ["a"]})
    with pytest.raises(ConfigError, match=r"data.columns.sound.source.clip: column 'clip' is not in the manifest; "
                                          r"did you mean 'clp'"):
        check_columns(df, load_config(alone).data, need_targets=True)
    with pytest.raises(ConfigError, match="must name another column"):
        load_config({"data": {"columns": {"sound": {"role": "audio", "source": "y"}}, "targets": {"y": "classification"}}})
    text = {"data": {"columns": {"note": "text", "sound": {"role": "audio", "source": "note"}},
                     "targets": {"y": "classification"}}}
    with pytest.raises(ConfigError, match="a file column"):
        load_config(text)
    with pytest.raises(ConfigError, match="data.video"):
        load_config({**base, "data": {**base["data"], "video": {"frames": 0}}})


def test_role_inference_tells_videos_from_sound(tmp_path):
    from mmfit.data.infer import data_config, infer_roles

    wave = 0.3 * np.sin(2 * np.pi * 440 * np.arange(8000) / 16000)
    rows = []
    for i in range(12):
        (tmp_path / f"{i}.mp4").write_bytes(encode_video(_bar_clip(6, 32), fps=6))
        (tmp_path / f"{i}.webm").write_bytes(encode_video(_bar_clip(6, 32), fps=6, audio=(wave, 16000),
                                                          container="webm"))
        from mmfit.data.modalities.audio import encode_audio

        (tmp_path / f"{i}a.webm").write_bytes(encode_audio(wave, 16000, "webm"))
        frames = [Image.fromarray(f) for f in _bar_clip(4, 32)]
        frames[0].save(tmp_path / f"{i}.gif", save_all=True, append_images=frames[1:])
        rows.append({"clip": f"{i}.mp4", "web": f"{i}.webm", "voice": f"{i}a.webm", "y": "ab"[i % 2],
                     "mixed": f"{i}.gif" if i % 3 == 0 else f"{i}.mp4"})
    df = pd.DataFrame(rows)
    choices = {c.column: c for c in infer_roles(df, ["y"], tmp_path)}
    assert choices["clip"].role == "video" and "clip_audio" not in choices  # no sound track: no audio column
    assert choices["web"].role == "video" and "sniffed" in choices["web"].reason
    # the clips with sound: their track becomes an audio column of its own, placed after its video
    track = choices["web_audio"]
    assert (track.role, track.source) == ("audio", "web") and "6 of 6" in track.reason
    assert list(choices).index("web_audio") == list(choices).index("web") + 1
    columns = data_config(list(choices.values()), None, tmp_path)["columns"]
    assert columns["web_audio"] == {"role": "audio", "source": "web"} and columns["web"] == "video"
    cfg = load_config({"data": data_config(list(choices.values()), "m.csv", tmp_path)})
    assert cfg.data.columns["web_audio"].source == "web"
    assert list(input_fields(cfg.data)) == ["clip", "web", "voice", "mixed"]  # a client sends each file once
    left_out = {c.column: c.role for c in infer_roles(df, ["y"], tmp_path, {"web_audio": "ignore"})}
    assert left_out["web_audio"] == "ignore"
    with pytest.raises(ConfigError, match="sound track of web is an audio column"):
        infer_roles(df, ["y"], tmp_path, {"web_audio": "text"})
    with pytest.raises(ConfigError, match="clip is not a video column with a sound track"):
        infer_roles(df, ["y"], tmp_path, {"clip_audio": "ignore"})
    renamed = {c.column for c in infer_roles(df.assign(web_audio=df["voice"]), ["y"], tmp_path)}
    assert {"web_audio", "web_audio2"} <= renamed  # a manifest column of that name keeps it
    assert choices["voice"].role == "audio"
    assert choices["mixed"].role == "video"  # clips and animated images: a video column reads both
