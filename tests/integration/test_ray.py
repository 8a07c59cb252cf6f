"""--backend ray on a local Ray cluster (ray.init(num_cpus=2)): the same results as the local path.

`mmfit predict RUN DATA --backend ray`: a manifest cut into shards (CSV and Parquet, read by Ray
tasks), predicted by a pool of actors, written as Parquet; every value equals `mmfit predict`'s on
the same rows, and a row with a broken file is listed (shard, row, column, file), none lost."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import make_dataset, tiny_config
from mmfit import api
from mmfit.cli import app

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from rich.console import Console

    root = tmp_path_factory.mktemp("ray")
    manifest = make_dataset(root / "data", n=45)
    cfg = tiny_config(manifest, root, train__epochs=1)
    return manifest, api.train(cfg, run_dir=root / "run", console=Console(quiet=True))


@pytest.mark.slow
def test_predict_on_ray_equals_the_local_path_and_lists_bad_rows(cluster, trained, tmp_path):
    manifest, run = trained
    df = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    df.loc[4, "image"] = "img/not-there.png"  # a missing file: listed, the row's other shards go on
    (manifest.parent / "bad.png").write_bytes(b"not a png")
    df.loc[30, "image"] = "bad.png"
    shards = tmp_path / "shards"
    shards.mkdir()
    df.iloc[:20].to_csv(shards / "a.csv", index=False)
    df.iloc[20:].to_parquet(shards / "b.parquet", index=False)
    local = pd.concat([api.predict(run, df.iloc[:20], root=manifest.parent, on_error="skip"),
                       api.predict(run, df.iloc[20:].reset_index(drop=True), root=manifest.parent, on_error="skip")
                       .assign(row=lambda d: d["row"] + 20)], ignore_index=True)
    r = CliRunner().invoke(app, ["predict", str(run), str(shards), "--backend", "ray", "--on-error", "skip",
                                 "--root", str(manifest.parent), "-o", str(tmp_path / "out"), "--workers", "2"])
    assert r.exit_code == 0, r.output + repr(r.exception)
    got = pd.concat([pd.read_parquet(p) for p in sorted((tmp_path / "out").glob("*.parquet"))], ignore_index=True)
    got["row"] = got["row"] + 20 * got["shard"]  # shard a: rows 0-19; shard b: rows 20-44
    assert len(got) == 43 and got["row"].tolist() == local["row"].tolist()
    for col in local.columns.drop("row"):
        if col.endswith(tuple(f"_prob_{c}" for c in "abc")) or col == "score":
            assert (got[col] - local[col]).abs().max() < 1e-5, col
        else:
            assert got[col].tolist() == local[col].tolist(), col
    listed = pd.read_csv(tmp_path / "out" / "skipped.csv")
    assert sorted(zip(listed["shard"], listed["row"])) == [(0, 4), (1, 10)]
    assert set(listed["column"]) == {"image"} and not listed["predicted"].any()
    assert "not-there.png" in " ".join(listed["file"].astype(str) + listed["reason"])
    assert "predicted 43 of 45 rows on Ray" in r.output.replace("\n", " ")
    # raise (the default): the first bad row stops the job, named by its shard and its row there. The
    # actor's code here, in this process, and its error as Ray hands it to the driver (a second job
    # would start a second pool of actors: about 8 s on 2 cores)
    from mmfit.cluster.engine import ROW, SHARD, data_error
    from mmfit.cluster.predict import _Predict
    from mmfit.data.errors import DataError

    actor = _Predict(str(run), [str(manifest.parent)] * 2, "raise", "cpu", "torch", 0)
    batch = df.iloc[20:].reset_index(drop=True)
    batch.insert(0, ROW, range(len(batch)))
    batch.insert(0, SHARD, 1)
    with pytest.raises(DataError, match=r"\(shard 1\)") as caught:
        actor(batch)
    assert [(e.row, e.column) for e in caught.value.errors] == [(10, "image")]

    error = caught.value

    @ray.remote(num_cpus=0)
    def worker():
        raise error

    with pytest.raises(Exception) as wrapped:
        ray.get(worker.remote())
    got = data_error(wrapped.value)
    assert type(got) is DataError and str(got) == str(error)  # its own words, not Ray's traceback


@pytest.mark.slow
def test_embed_on_ray_equals_the_local_path_and_a_run_trains_on_the_vectors(cluster, trained, tmp_path,
                                                                            quiet_console):
    """`mmfit embed RUN DATA`: each row's image, audio and text replaced by the run's embeddings of
    them, the other columns kept; on Ray (a CSV and a Parquet shard, two actors) the same rows and
    vectors as the local path; and a run trains on the Ray output folder, reading no file."""
    import numpy as np

    manifest, run = trained
    df = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    local = api.embed(run, manifest, tmp_path / "emb.parquet", console=quiet_console)
    assert list(local.columns) == ["row", *[c for c in df.columns if c not in ("image", "audio", "text")],
                                   "image_embedding", "audio_embedding", "text_embedding"]
    back = pd.read_parquet(tmp_path / "emb.parquet")
    assert len(back) == len(df) and len(back["image_embedding"][0]) == 16  # model.dim of the tiny run
    shards = tmp_path / "shards"
    shards.mkdir()
    df.iloc[:20].to_csv(shards / "a.csv", index=False)
    df.iloc[20:].to_parquet(shards / "b.parquet", index=False)
    r = CliRunner().invoke(app, ["embed", str(run), str(shards), "--backend", "ray", "--root", str(manifest.parent),
                                 "-o", str(tmp_path / "out"), "--workers", "2"])
    assert r.exit_code == 0, r.output + repr(r.exception)
    got = pd.concat([pd.read_parquet(p) for p in sorted((tmp_path / "out").glob("*.parquet"))], ignore_index=True)
    assert got["row"].tolist() == list(range(20)) + list(range(25)) and got["shard"].tolist() == [0] * 20 + [1] * 25
    for col in local.columns.drop("row"):
        if col.endswith("_embedding"):
            a, b = np.stack(got[col].to_numpy()), np.stack(local[col].to_numpy())
            assert a.shape == b.shape and np.abs(a - b).max() < 1e-5, col
        else:
            assert got[col].astype(str).tolist() == local[col].astype(str).tolist(), col
    assert "embedded 45 of 45 rows on Ray" in r.output.replace("\n", " ")
    cfg = tiny_config(tmp_path / "out", tmp_path, train__epochs=1,  # the Ray parts, read as one table
                      data__columns={"image_embedding": "vector", "audio_embedding": "vector",
                                     "text_embedding": "vector", "x1": "numeric"},
                      data__targets={"label": "classification"})
    on_vectors = api.train(cfg, run_dir=tmp_path / "on-vectors", console=quiet_console)
    from mmfit.run.store import Run

    loaded = Run(on_vectors)
    pre = loaded.preprocessor(loaded.config())
    assert pre.modalities == ["tabular"] and pre.tabular.sizes["image_embedding"] == 16


@pytest.mark.slow
def test_preprocess_on_ray_writes_the_same_cache_shards_as_the_local_path(cluster, tmp_path, quiet_console):
    """`mmfit preprocess --backend ray`: the blocks decoded by Ray tasks are the same bytes, under the
    same names, as the local decoding writes; a training run then decodes nothing."""
    manifest = make_dataset(tmp_path / "data", n=30)
    caches = {}
    for backend in ("local", "ray"):
        cfg = tiny_config(manifest, tmp_path / backend, data__shard_rows=8)  # 4 blocks of each file column
        out = api.preprocess(cfg, backend=backend, console=quiet_console)
        assert out["skipped"] == 0
        caches[backend] = tmp_path / backend / "cache"
    files = {b: {p.relative_to(c): p.read_bytes() for p in c.rglob("*") if p.is_file() and "sqlite" not in p.name}
             for b, c in caches.items()}
    assert len(files["local"]) >= 8 and files["ray"].keys() == files["local"].keys()
    assert all(files["ray"][k] == files["local"][k] for k in files["local"])
    import io

    from rich.console import Console

    buf = io.StringIO()
    api.train(tiny_config(manifest, tmp_path / "ray", train__epochs=1, data__shard_rows=8), run_dir=tmp_path / "run",
              console=Console(file=buf, width=200))
    assert "cache hit: image column 'image' (30 files, 0 decoded)" in buf.getvalue(), buf.getvalue()


@pytest.mark.slow
def test_tune_on_ray_takes_the_trials_of_one_study_as_the_local_workers_do(cluster, tmp_path, quiet_console):
    """`mmfit tune --backend ray`: two Ray tasks take the trials of one study from its storage; with a
    grid, they run the same trials as the local path and score each the same."""
    manifest = make_dataset(tmp_path / "data", n=40)
    cfg = tiny_config(manifest, tmp_path, train__epochs=2)
    cfg["data"]["columns"] = {"text": "text", "x1": "numeric"}
    cfg["tune"] = {"sampler": "grid", "pruner": "none", "trials": 4, "space": {
        "train.lr": {"type": "categorical", "choices": [0.001, 0.01]},
        "model.fusion": {"type": "categorical", "choices": ["concat", "gated"]}}}
    import torch

    scores, threads = {}, torch.get_num_threads()
    for backend, workers in (("local", 1), ("ray", 2)):
        out = tmp_path / f"study-{backend}"
        torch.set_num_threads(1)  # as each of the two Ray tasks on 2 CPUs: the same arithmetic on both sides
        try:
            summary = api.tune(cfg, workers=workers, out=out, backend=backend, console=quiet_console)
        finally:
            torch.set_num_threads(threads)
        assert summary["completed"] == 4 and summary["workers"] == workers
        trials = pd.read_csv(out / "trials.csv")
        scores[backend] = {(r["params.train.lr"], r["params.model.fusion"]): r["value"] for _, r in trials.iterrows()}
    assert scores["ray"].keys() == scores["local"].keys() and len(scores["ray"]) == 4
    assert all(abs(scores["ray"][k] - scores["local"][k]) < 1e-3 for k in scores["local"]), scores


@pytest.mark.slow
def test_train_on_ray_steps_like_one_process_and_resumes_after_a_worker_is_killed(cluster, tmp_path, quiet_console):
    """`mmfit train --backend ray --workers 2`: Ray Train's two workers step like one process with the
    same global batch (dropout off), and rank 0 writes an ordinary run directory. A worker killed
    (SIGKILL) once the run has a checkpoint: Ray starts the group again, the loop resumes from the
    run's last checkpoint, and the run ends as if nothing happened: one record per epoch, the losses
    of one process in every epoch (before the kill and after), the kept weights evaluated."""
    import os
    import signal
    import threading
    import time

    import psutil

    from conftest import curve, without_dropout
    from mmfit.run.store import Run

    manifest = make_dataset(tmp_path / "data", n=60)
    cfg = without_dropout(tiny_config(manifest, tmp_path, train__epochs=4))
    one = api.train(cfg, run_dir=tmp_path / "one", console=quiet_console)
    run, result = Run(tmp_path / "two"), {}

    def fit():
        try:
            result["run"] = api.train_on_ray(cfg, [], run.path, workers=2, console=quiet_console)
        except BaseException as e:  # seen by the test's thread below
            result["error"] = e

    thread = threading.Thread(target=fit)
    thread.start()
    killed, deadline = None, time.time() + 300
    while killed is None and thread.is_alive() and time.time() < deadline:
        if run.has_checkpoint() and len(run.history()) >= 2:
            workers = [p for p in psutil.process_iter(["cmdline"])
                       if "RayTrainWorker" in " ".join(p.info["cmdline"] or [])]
            if workers:
                killed = workers[0].pid
                os.kill(killed, signal.SIGKILL)
        time.sleep(0.1)
    thread.join(timeout=600)
    assert killed is not None, "the run ended before a worker could be killed"
    assert "error" not in result, result.get("error")
    (e1, loss1, _), (e2, loss2, _) = curve(one), curve(result["run"])
    assert e2 == e1 == list(range(4))  # the epochs after the kill ran once, on resume
    assert all(abs(a - b) <= 1e-3 * max(1.0, abs(a)) for a, b in zip(loss1, loss2)), (loss1, loss2)
    assert run.evaluation("test")["metrics"]["label"]["n"] > 0
    for f in ("config.yaml", "model.safetensors", "checkpoints/last.safetensors", "eval/test.json"):
        assert (run.path / f).exists(), f
