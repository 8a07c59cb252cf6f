"""Property-based fuzzing (hypothesis): /predict never answers 5xx nor dies, whatever the client
sends; the manifest reader loses no row (each is read, or named among the bad ones)."""

from __future__ import annotations

import base64
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import make_dataset, tiny_config

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

FUZZ = settings(max_examples=120, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from rich.console import Console

    from mmfit import api
    from mmfit.deploy.server import ServeOptions, create_app

    tmp = tmp_path_factory.mktemp("fuzz")
    manifest = make_dataset(tmp / "data", n=30)
    run = api.train(tiny_config(manifest, tmp, train__epochs=1), run_dir=tmp / "run", console=Console(quiet=True))
    opts = ServeOptions(max_body_mb=1, max_image_pixels=500 * 500, max_audio_seconds=3.0, timeout_s=60)
    with TestClient(create_app(run, options=opts), raise_server_exceptions=False) as client:
        yield client, tmp / "data"


def _real(data, col: str) -> bytes:
    return (data / ("img/1.png" if col == "image" else "aud/1.wav")).read_bytes()


numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10 ** 30, 10 ** 30),
                    st.sampled_from(["nan", "inf", "-inf", "1e400", "0x10", " 3 ", "", "１２", "1,5"]))
texts = st.one_of(st.text(max_size=300), st.sampled_from(["\x00\x01", "\ud800".encode("utf-8", "surrogatepass")
                                                           .decode("utf-8", "replace"), "é" * 10, "\u202e\u200b"]))
odd = st.one_of(st.none(), st.booleans(), st.lists(st.integers(), max_size=3),
                st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


def file_values(col):
    return st.one_of(st.binary(max_size=2000), st.builds(lambda n: ("cut", n), st.integers(0, 400)),
                     st.just(("real",)), st.text(max_size=50))


@FUZZ
@given(st.fixed_dictionaries({}, optional={"image": file_values("image"), "audio": file_values("audio"),
                                           "text": st.one_of(texts, odd), "x1": st.one_of(numbers, odd),
                                           "color": st.one_of(texts, odd), "bogus": texts}),
       st.booleans())
def test_predict_never_answers_5xx(served, fields, as_json):
    client, data = served
    sent = {}
    for k, v in fields.items():
        if isinstance(v, tuple):  # a real file, whole or cut short
            v = _real(data, k) if v[0] == "real" else _real(data, k)[: v[1]]
        sent[k] = v
    if as_json:
        body = {k: base64.b64encode(v).decode() if isinstance(v, bytes) else v for k, v in sent.items()}
        body = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in body.items()}
        r = client.post("/predict", json={"inputs": body})
    else:
        files = {k: (k, v) for k, v in sent.items() if isinstance(v, bytes)}
        form = {k: str(v) for k, v in sent.items() if not isinstance(v, bytes)}
        r = client.post("/predict", files=files or None, data=form)
    assert r.status_code < 500, (r.status_code, r.text[:300])
    assert isinstance(r.json(), dict)


@FUZZ
@given(st.binary(max_size=3000), st.sampled_from(["multipart/form-data; boundary=xyz", "multipart/form-data",
                                                   "application/json", "application/x-www-form-urlencoded"]))
def test_broken_bodies_never_answer_5xx(served, body, ctype):
    client, _ = served
    r = client.post("/predict", content=body, headers={"content-type": ctype})
    assert r.status_code < 500, (r.status_code, r.text[:300])


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(st.fixed_dictionaries({
    "image": st.sampled_from(["img/0.png", "img/nowhere.png", "", "../../etc/passwd", "img", "bad.png"]),
    "audio": st.sampled_from(["aud/1.wav", "aud/2.wav", "", "bad.wav", "aud/nowhere.flac"]),
    "text": texts, "x1": numbers, "color": st.one_of(texts, st.just("")),
    "label": st.sampled_from(["a", "b", "c", "", "zz"]), "score": numbers}), min_size=1, max_size=12),
    st.sampled_from(["skip", "missing"]))
def test_the_manifest_reader_loses_no_row(served, rows, policy):
    from mmfit.config import ConfigError, load_config
    from mmfit.data.errors import DataError
    from mmfit.data.prepare import prepare_training

    _, data = served
    (data / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + np.random.default_rng(0).bytes(64))
    (data / "bad.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage")
    good = pd.read_csv(data / "manifest.csv", dtype=str, keep_default_na=False).head(12)  # enough to train on
    fuzz = pd.DataFrame([{k: str(v) for k, v in r.items()} for r in rows])
    df = pd.concat([good[fuzz.columns], fuzz], ignore_index=True)
    path = data / "fuzz.csv"
    df.to_csv(path, index=False)
    cfg = tiny_config(path, data.parent, data__on_error=policy, data__cache_dir=None)
    cfg["data"]["split"] = {"val": 0.0, "test": 0.0, "seed": 0}
    try:
        pre, splits, errors = prepare_training(load_config(cfg), log=lambda *a: None)
    except (ConfigError, ValueError) as e:  # e.g. no training rows left, a class without rows: named
        assert not isinstance(e, DataError) and str(e)
        return
    kept = {int(r) for s in splits.values() for r in s.rows.tolist()}
    bad = errors.bad_rows()
    assert kept.isdisjoint(bad) and kept | bad == set(range(len(df)))  # every row read, or named as bad
    for s in splits.values():  # nothing that is not a finite number reaches the model
        for m, inp in s.inputs.items():
            for k, v in inp.items():
                arr = np.asarray(v[:] if hasattr(v, "__getitem__") else v)
                if arr.dtype.kind == "f":
                    assert np.isfinite(arr).all(), (m, k)
