"""mmfit serve: predictions over HTTP match the Predictor; every bad request gets a 4xx with a
message and the server keeps serving; micro-batching groups concurrent requests."""

from __future__ import annotations

import asyncio
import base64
import io
import json

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from conftest import make_dataset, tiny_config
from mmfit import Predictor, api

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from mmfit.deploy.server import ServeOptions, create_app  # noqa: E402


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from rich.console import Console

    tmp = tmp_path_factory.mktemp("serve")
    manifest = make_dataset(tmp / "data")
    cfg = tiny_config(manifest, tmp, train__epochs=2)
    cfg["data"]["columns"]["text"] = {"role": "text", "required": True}
    run = api.train(cfg, run_dir=tmp / "run", console=Console(quiet=True))
    opts = ServeOptions(max_body_mb=0.5, max_image_pixels=200 * 200, max_audio_seconds=2.0, max_text_chars=200,
                        max_batch_items=8, max_audio_samples=200_000)
    with TestClient(create_app(run, options=opts)) as client:
        yield client, run, tmp / "data"


def _files(data, i=0):
    return {"image": (data / "img" / f"{i}.png").read_bytes(), "audio": (data / "aud" / f"{i + 1}.wav").read_bytes()}


def _expected(run, data, i=0):
    import pandas as pd

    df = pd.DataFrame([{"image": f"img/{i}.png", "audio": f"aud/{i + 1}.wav", "text": "red round small sample",
                        "x1": "0.1", "color": "r"}])
    return Predictor.load(run).predict(df, root=data).iloc[0]


def test_multipart_and_json_match_the_predictor(served):
    client, run, data = served
    f = _files(data)
    fields = {"text": "red round small sample", "x1": "0.1", "color": "r"}
    r = client.post("/predict", files={k: (k, v) for k, v in f.items()}, data=fields)
    assert r.status_code == 200, r.text
    got = r.json()
    exp = _expected(run, data)
    assert got["label"]["label"] == exp["label"]
    for c, p in got["label"]["probabilities"].items():
        assert abs(p - exp[f"label_prob_{c}"]) < 1e-5
    assert abs(got["score"]["value"] - exp["score"]) < 1e-4
    body = {"inputs": {**fields, **{k: base64.b64encode(v).decode() for k, v in f.items()}}}
    r2 = client.post("/predict?explain=true", json=body)
    assert r2.status_code == 200, r2.text
    assert r2.json()["label"] == got["label"]
    expl = r2.json()["explanation"]
    assert set(expl) == {"image", "audio", "text", "tabular"}
    assert abs(sum(e["share"] for e in expl.values()) - 1) < 1e-6 or all(e["share"] == 0 for e in expl.values())
    att = r2.json()["attribution"]  # integrated gradients inside each input
    assert set(att["maps"]) == {"image", "audio"} and att["tokens"]["text"][0]["token"]
    assert "attribution" not in got  # only when asked


@pytest.mark.parametrize("container", ["m4a", "webm"])
def test_phone_and_browser_recordings_are_served(served, container):
    """The web page sends the browser's own recording (WebM/Opus; Safari MP4/AAC): the server reads
    it as it reads the WAV it was made from."""
    pytest.importorskip("av")
    from mmfit.data.modalities.audio import encode_audio, read_audio

    client, run, data = served
    f = _files(data)
    wave, sr = read_audio(f["audio"], lambda rate: 10**7)
    fields = {"text": "red round small sample", "x1": "0.1", "color": "r"}
    as_wav = client.post("/predict", files={"image": ("i.png", f["image"]), "audio": ("a.wav", f["audio"])},
                         data=fields).json()
    r = client.post("/predict", files={"image": ("i.png", f["image"]),
                                       "audio": (f"recording.{container}", encode_audio(wave, sr, container))},
                    data=fields)
    assert r.status_code == 200, r.text
    for c, p in r.json()["label"]["probabilities"].items():
        assert abs(p - as_wav["label"]["probabilities"][c]) < 0.05


def test_modalities_may_be_omitted_and_batch_reports_each_item(served):
    client, _, data = served
    r = client.post("/predict?explain=true", json={"inputs": {"text": "blue square"}})
    assert r.status_code == 200, r.text
    expl = r.json()["explanation"]
    assert expl["text"]["present"] and not expl["image"]["present"] and expl["image"]["share"] == 0
    img = base64.b64encode(_files(data)["image"]).decode()
    items = [{"text": "green spiky", "image": img}, {"text": "x", "image": "bm90IGFuIGltYWdl"}, {"x1": 1.5},
             {"text": "red", "bogus": 1}]
    r = client.post("/predict/batch", json={"items": items})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert r.json()["errors"] == 3
    assert "label" in preds[0]
    assert "image" in preds[1]["error"]
    assert "missing required field 'text'" in preds[2]["error"]
    assert "unknown field 'bogus'" in preds[3]["error"]


@pytest.mark.parametrize("case", ["oversized", "content_type", "corrupt_image", "truncated_audio", "missing_required",
                                  "unknown_field", "path_not_file", "bad_json", "too_many_pixels", "long_audio",
                                  "long_text", "bad_number", "no_input", "too_many_items", "audio_bomb"])
def test_bad_requests_get_4xx_with_a_message_and_the_server_keeps_serving(served, case):
    client, _, data = served
    f = _files(data)
    ok = {"text": "red round"}
    wav = io.BytesIO()
    sf.write(wav, np.zeros(8000 * 3, np.float32), 8000, format="WAV")
    big = io.BytesIO()
    Image.new("RGB", (300, 300)).save(big, format="PNG")
    bomb = io.BytesIO()  # 1 s of silence, 8 channels at 96 kHz: 768,000 samples in a few KB of FLAC
    sf.write(bomb, np.zeros((96_000, 8), np.float32), 96_000, format="FLAC")
    requests = {
        "oversized": lambda: client.post("/predict", files={"image": ("a.png", b"\0" * 600_000)}, data=ok),
        "content_type": lambda: client.post("/predict", content=b"text=hello", headers={"content-type": "text/plain"}),
        "corrupt_image": lambda: client.post("/predict", files={"image": ("a.png", b"\x89PNG\r\n\x1a\nbroken")}, data=ok),
        "truncated_audio": lambda: client.post("/predict", files={"audio": ("a.wav", f["audio"][:60])}, data=ok),
        "missing_required": lambda: client.post("/predict", files={"image": ("a.png", f["image"])}),
        "unknown_field": lambda: client.post("/predict", data={**ok, "colour": "r"}),
        "path_not_file": lambda: client.post("/predict", json={"inputs": {**ok, "image": "/etc/passwd"}}),
        "bad_json": lambda: client.post("/predict", content=b"{not json", headers={"content-type": "application/json"}),
        "too_many_pixels": lambda: client.post("/predict", files={"image": ("b.png", big.getvalue())}, data=ok),
        "long_audio": lambda: client.post("/predict", files={"audio": ("c.wav", wav.getvalue())}, data=ok),
        "long_text": lambda: client.post("/predict", data={"text": "word " * 100}),
        "bad_number": lambda: client.post("/predict", data={**ok, "x1": "twelve"}),
        "no_input": lambda: client.post("/predict", json={"inputs": {}}),
        "too_many_items": lambda: client.post("/predict/batch", json={"items": [ok] * 9}),
        "audio_bomb": lambda: client.post("/predict", files={"audio": ("d.flac", bomb.getvalue())}, data=ok),
    }
    expected = {"oversized": 413, "content_type": 415, "bad_json": 400, "too_many_pixels": 413, "long_audio": 413,
                "long_text": 413, "too_many_items": 413, "audio_bomb": 413}
    r = requests[case]()
    assert r.status_code == expected.get(case, 422), (case, r.status_code, r.text)
    msg = r.json()["detail"]
    assert isinstance(msg, str) and len(msg) > 10
    words = {"oversized": "limit", "content_type": "content type", "corrupt_image": "image",
             "truncated_audio": "audio", "missing_required": "text", "unknown_field": "colour",
             "path_not_file": "base64", "bad_json": "JSON", "too_many_pixels": "pixels", "long_audio": "s long",
             "long_text": "characters", "bad_number": "x1", "no_input": "at least one", "too_many_items": "limit",
             "audio_bomb": "8 channels"}
    assert words[case] in msg, msg
    assert client.post("/predict", data=ok).status_code == 200  # still serving
    assert client.get("/health").json()["status"] == "ok"


def test_inflight_budget_answers_503_with_retry_after_and_frees_what_it_held(served):
    client, _, data = served
    budget = client.app.state.budget
    files = {k: (k, v) for k, v in _files(data).items()}
    used, budget.used = budget.used, budget.limit  # as if other requests' files filled it
    wait, budget.wait_s = budget.wait_s, 0.2
    try:
        r = client.post("/predict", files=files, data={"text": "red round"})
        assert r.status_code == 503 and r.headers["retry-after"] == "1" and "busy" in r.json()["detail"]
        assert client.post("/predict", data={"text": "red round"}).status_code == 200  # no files: nothing to hold
    finally:
        budget.used, budget.wait_s = used, wait
    assert client.post("/predict", files=files, data={"text": "red round"}).status_code == 200
    assert client.get("/health").json()["inflight_mb"] == 0  # every request gave back what it held


def test_metadata_health_openapi_and_page(served):
    client, _, _ = served
    meta = client.get("/metadata").json()
    assert [i["name"] for i in meta["inputs"]] == ["image", "audio", "text", "x1", "color"]
    assert meta["inputs"][2]["required"] and meta["tasks"]["label"]["labels"] == ["a", "b", "c"]
    assert meta["tasks"]["score"]["type"] == "regression" and meta["versions"]["torch"]
    spec = client.get("/openapi.json").json()
    assert {"/predict", "/predict/batch", "/health", "/metadata"} <= set(spec["paths"])
    assert "multipart/form-data" in spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    docs = client.get("/docs").text
    assert "swagger" in docs.lower() and "cdn.jsdelivr" not in docs  # offline docs
    page = client.get("/")
    assert page.status_code == 200 and "<script>" in page.text and "metadata" in page.text


def test_micro_batching_groups_concurrent_requests(served):
    """32 concurrent requests share forward passes (fewer batches than requests), and each
    request gets its own answer back."""
    _, run, data = served
    import httpx

    app = create_app(run, options=ServeOptions(max_batch=16, max_wait_ms=50))
    texts = [" ".join(["red", "blue", "green"][i % 3] for _ in range(2)) for i in range(32)]

    async def go():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                rs = await asyncio.gather(*[c.post("/predict", json={"inputs": {"text": t}}) for t in texts])
                single = [await c.post("/predict", json={"inputs": {"text": t}}) for t in texts[:3]]
            return rs, single, app.state.batcher.batches

    rs, single, batches = asyncio.run(go())
    assert all(r.status_code == 200 for r in rs)
    assert batches - 3 < 32  # concurrent requests were batched together
    for r, s in zip(rs[:3], single):  # batched answers equal one-at-a-time answers
        a, b = r.json()["label"]["probabilities"], s.json()["label"]["probabilities"]
        assert max(abs(a[k] - b[k]) for k in a) < 1e-5


def test_onnx_backend_serves(served, tmp_path):
    pytest.importorskip("onnxruntime")
    client, run, data = served
    api.export(run)
    with TestClient(create_app(run, backend="onnx")) as c:
        r = c.post("/predict", json={"inputs": {"text": "red round small sample"}})
        assert r.status_code == 200, r.text
        t = client.post("/predict", json={"inputs": {"text": "red round small sample"}}).json()
        a, b = r.json()["label"]["probabilities"], t["label"]["probabilities"]
        assert max(abs(a[k] - b[k]) for k in a) < 1e-4
        assert c.get("/metadata").json()["model"]["backend"] == "onnx"
    assert json.loads((run / "export.json").read_text())["max_abs_diff"] <= 1e-4
