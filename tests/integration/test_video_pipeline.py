"""A video column and its sound track through the whole pipeline (issue 17): training with the frame
encoder's per-frame vectors computed once, evaluation, prediction, explanations, robustness, ONNX
export, and the server taking an uploaded clip."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from conftest import make_video_dataset
from mmfit import api
from mmfit.deploy.predictor import Predictor


def _cfg(manifest, tmp, **train):
    return {
        "data": {"manifest": str(manifest), "cache_dir": str(tmp / "cache"),
                 "columns": {"clip": "video", "clip_audio": {"role": "audio", "source": "clip"}, "n": "numeric"},
                 "targets": {"label": "classification"},
                 "split": {"val": 0.25, "test": 0.25, "seed": 0},
                 "image": {"size": 16}, "video": {"frames": 4},
                 "audio": {"sample_rate": 8000, "seconds": 1.0, "n_mels": 16, "n_fft": 128, "hop_length": 64}},
        "model": {"dim": 16, "encoders": {
            "clip": {"name": "scratch", "layers": 1, "heads": 2, "patch": 4, "finetune": "frozen"},
            "clip_audio": {"name": "scratch", "layers": 1, "heads": 2, "patch": 4},
            "tabular": {"name": "scratch", "layers": 1, "heads": 2}}},
        "train": {"epochs": 3, "batch_size": 8, "output_dir": str(tmp / "runs"), **train},
    }


def _train(cfg, run_dir):
    buf = io.StringIO()
    run = api.train(cfg, run_dir=run_dir, console=Console(file=buf, width=200))
    return run, buf.getvalue()


@pytest.fixture(scope="module")
def video_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("video")
    manifest = make_video_dataset(tmp / "data", n=24)
    run, log = _train(_cfg(manifest, tmp), tmp / "run")
    return run, log, tmp, manifest


def test_video_and_its_sound_track_train_with_frame_vectors_computed_once(video_run):
    run, log, tmp, manifest = video_run
    assert "decoded video column 'clip': 24 files" in log
    # the GIF clips have no sound: their sound track is absent, not an error
    assert "decoded audio column 'clip_audio': 24 files" in log and "skipped" not in log.lower()
    assert "clip: frozen encoder's outputs for 24 rows, 24 computed (0 from the cache)" in log, log
    other = _cfg(manifest, tmp)
    other["data"]["split"]["seed"] = 3  # other rows in each split, the same encoder: nothing to compute again
    _, log2 = _train(other, tmp / "run2")
    assert "clip: frozen encoder's outputs for 24 rows, 0 computed (24 from the cache)" in log2
    assert "cache hit: video column 'clip'" in log2
    res = api.evaluate(run, console=Console(quiet=True))
    assert set(res["ablation"]) >= {"without_clip", "without_clip_audio", "only_clip"}
    from mmfit.run.store import Run

    cached = Run(run).evaluation("test")["metrics"]["label"]["macro_f1"]
    assert abs(cached - res["metrics"]["label"]["macro_f1"]) < 1e-9  # the live frame encoder agrees


def test_predict_explain_and_robustness_read_clips(video_run):
    run, _, tmp, manifest = video_run
    df = pd.read_csv(manifest).head(6)
    pred = Predictor.load(run)
    out = pred.predict(df, root=manifest.parent)
    assert len(out) == 6 and set(out["label"]) <= {"l", "r"}
    ex = pred.explain(df, root=manifest.parent, steps=4)
    assert ex[0]["maps"]["clip"].shape == (16, 4 * 16) and ex[0]["frames"]["clip"] == 4  # a filmstrip
    from mmfit.evaluation.attribution import to_json

    assert len(to_json(ex[0])["maps"]["clip"][0]) == 4 * 16
    assert df["clip"][5].endswith(".gif") and "clip_audio" in ex[4]["maps"]
    assert "clip_audio" not in ex[5]["maps"]  # a GIF has no sound track: nothing to attribute
    rob = api.robustness(run, console=Console(quiet=True), attacks=False)
    assert {"clip/gaussian_noise", "clip/occlusion", "clip_audio/noise_snr"} <= set(rob["corruptions"])


def test_video_model_exports_and_serves_an_uploaded_clip(video_run):
    pytest.importorskip("onnxruntime")
    from fastapi.testclient import TestClient

    from mmfit.data.modalities.video import encode_video
    from mmfit.deploy.server import ServeOptions, create_app

    run, _, tmp, manifest = video_run
    res = api.export(run, console=Console(quiet=True))
    assert max(res["max_abs_diff_logits"].values()) < 1e-4
    data = manifest.parent
    clip = (data / "vid" / "0.mp4").read_bytes()
    expected = Predictor.load(run).predict(pd.DataFrame([{"clip": "vid/0.mp4", "n": "0.5"}]), root=data).iloc[0]
    with TestClient(create_app(run, options=ServeOptions(max_video_frames=100))) as client:
        meta = client.get("/metadata").json()
        assert [i["name"] for i in meta["inputs"]] == ["clip", "n"]  # the sound track is no field of its own
        r = client.post("/predict", files={"clip": ("0.mp4", clip)}, data={"n": "0.5"})
        assert r.status_code == 200, r.text
        got = r.json()["label"]
        assert got["label"] == expected["label"]
        assert abs(got["probabilities"][expected["label"]] - expected[f"label_prob_{expected['label']}"]) < 1e-4
        long = encode_video(np.zeros((120, 16, 16, 3), np.uint8), fps=30)
        r = client.post("/predict", files={"clip": ("long.mp4", long)})
        assert r.status_code == 413 and "120 frames" in r.json()["detail"]
        r = client.post("/predict", files={"clip": ("bad.mp4", b"\0not a video" * 40)})
        assert r.status_code == 422 and "cannot decode video" in r.json()["detail"]
