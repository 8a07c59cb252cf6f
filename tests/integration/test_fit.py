"""Zero-config training: `mmfit train MANIFEST --target COL` infers roles, trains the recipe's members
within the time limit, and writes an ensemble run that predicts, evaluates and exports like any run."""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pandas as pd
import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from mmfit import api
from mmfit.cli import app
from mmfit.config import load_config
from mmfit.run.layout import ENSEMBLE
from mmfit.run.loaded import load_run
from mmfit.run.store import Run

LIMIT = 18  # seconds: the recipe's time limit in the shared fit
# Short texts and 32 px images through the packaged MiniLM and EfficientNet-Lite0 (the pipeline is the
# same as at 224 px; EfficientNet costs about 1/40 of it)
SMALL = ["data.text.max_length=16", "data.image.size=32"]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    from conftest import make_dataset

    root = tmp_path_factory.mktemp("fit")
    manifest = make_dataset(root / "data", n=60)
    buf = io.StringIO()
    t0 = time.time()
    import mmfit  # the Python entry the README shows

    run = mmfit.fit(manifest, "label", time_limit=LIMIT, run_dir=root / "run",
                    overrides=[f"data.cache_dir={root / 'cache'}", *SMALL],
                    console=Console(file=buf, width=200))
    return manifest, run, buf.getvalue(), time.time() - t0


@pytest.mark.slow
def test_roles_members_and_the_ensemble_are_recorded(fitted):
    manifest, run, log, seconds = fitted
    assert "identifier: 60 distinct integers" in log and "image files (extension .png" in log
    # the members read the same data: what its decoding said is shown once, not once a member
    assert log.count("decoded image column 'image'") == 1 and log.count("cache hit: image column 'image'") == 1
    assert log.count("member ") >= 3
    assert seconds < LIMIT * 1.3  # the time limit holds (evaluation included, with some slack)
    spec = json.loads((run / ENSEMBLE).read_text())
    assert "probe" in spec["members"] and all(k.split("-")[0] in {"convex", "trees", "probe", "neighbours", "finetune", "scratch"} for k in spec["members"])
    assert abs(sum(w["weight"] for w in spec["weights"]["label"]) - 1) < 1e-9
    for member in spec["members"].values():  # weights kept, the resume state (optimiser) not
        assert (run / member / "model.safetensors").exists() and not (run / member / "checkpoints").exists()
    # the frozen encoders (MiniLM, EfficientNet-Lite0: about 100 MB) are written once for the members
    # that hold them alike, each member's model.safetensors holds the rest
    from safetensors import safe_open

    shared = {}
    for name in ("convex", "trees", "probe"):
        with safe_open(str(run / "members" / name / "model.safetensors"), framework="pt") as f:
            shared[name] = f.metadata()["frozen"]
        assert (run / "members" / name / "model.safetensors").stat().st_size < 5e6
    assert len(set(shared.values())) == 1 and (run / "members" / "probe" / shared["probe"]).stat().st_size > 5e7
    assert {r["column"]: r["role"] for r in spec["roles"]}["x1"] == "numeric"
    assert set(spec["validation"]["label"]) >= {"probe/fused", "probe/aux:text", "convex/fused", "convex/aux:text"}
    # every chosen member is on train + val, or ensemble.json says why not (the time left)
    chosen = {w["member"] for w in spec["weights"]["label"]}
    on_train = {w["member"] for w in spec["weights"]["label"] if w["trained_on"] == "train"}
    assert on_train == set(spec.get("not_refit", {})) & chosen
    assert all(v["needed_s"] > v["left_s"] for v in spec.get("not_refit", {}).values())
    # the convex member is fitted on train + val: the selection weighs its out-of-fold val logits
    assert all(w["trained_on"] == "train+val" for w in spec["weights"]["label"] if w["member"] == "convex")
    cands = Run(run / "members" / "convex").read_arrays("candidates.npz")
    oof = Run(run / "members" / "convex").read_arrays("oof.npz")
    val_rows = load_run(run / "members" / "probe").data()["val"].rows.numpy()
    at = {int(r): i for i, r in enumerate(oof["rows"])}
    assert np.allclose(cands["logits/val/label/fused"], oof["logits/label/fused"][[at[int(r)] for r in val_rows]])
    assert {"macro_f1", "loss"} <= set(spec["validation"]["label"]["probe/fused"])
    test = Run(run).evaluation("test")
    assert test["ensemble"] == spec["weights"] and "without_text" in test["ablation"]
    cfg = load_config(run / "config.yaml")  # the run's config is an ordinary, complete one
    assert cfg.data.columns["image"].role == "image" and "id" not in cfg.data.columns


@pytest.mark.slow
def test_the_candidates_logits_are_kept_and_give_the_recorded_scores(fitted):
    """Each member keeps its heads' logits (candidates.npz): weighting their calibrated probabilities
    as ensemble.json says gives the ensemble's recorded validation and test macro-F1."""
    import torch

    from mmfit.evaluation.metrics import task_metrics
    from mmfit.models.ensemble import to_scores
    from mmfit.run.layout import CANDIDATES

    _, run, _, _ = fitted
    spec = json.loads((run / ENSEMBLE).read_text())
    for split, member_dir in (("val", lambda k: f"members/{k}"), ("test", lambda k: spec["members"][k])):
        total, y, mask = 0.0, None, None
        for w in spec["weights"]["label"]:
            arrays = Run(run / member_dir(w["member"])).read_arrays(CANDIDATES)
            y, mask = arrays[f"y/{split}/label"], arrays[f"mask/{split}/label"]
            logits = torch.from_numpy(arrays[f"logits/{split}/label/{w['head']}"])
            total = total + w["weight"] * to_scores(logits, "classification", w["temperature"]).numpy()
        got = task_metrics("classification", y[mask], total[mask], [0, 1, 2])["macro_f1"]
        assert abs(got - Run(run).evaluation(split)["metrics"]["label"]["macro_f1"]) < 1e-9, split


@pytest.mark.slow
def test_the_ensemble_predicts_evaluates_and_exports_like_a_run(fitted, tmp_path):
    manifest, run, _, _ = fitted
    recorded = Run(run).evaluation("test")["metrics"]["label"]
    live = api.evaluate(run, console=Console(quiet=True))["metrics"]["label"]  # EnsembleModel, encoders live
    assert abs(recorded["macro_f1"] - live["macro_f1"]) < 1e-9 and abs(recorded["auroc"] - live["auroc"]) < 1e-4
    preds = api.predict(run, manifest)
    assert len(preds) == 60 and set(preds["label"]) <= {"a", "b", "c"}
    r = CliRunner().invoke(app, ["export", str(run)])
    assert r.exit_code == 0, r.output + repr(r.exception)
    assert json.loads((run / "export.json").read_text())["max_abs_diff"] < 1e-4
    page = api.report(run, console=Console(quiet=True)).read_text()
    assert "<h2>Ensemble</h2>" in page and "candidates on validation" in page and "identifier" in page


@pytest.mark.slow
def test_fit_returns_a_predictor_like_the_ones_users_know(fitted, tmp_path):
    """mmfit.fit -> a Predictor: predict, predict_proba, evaluate, leaderboard, extract_embedding,
    save / load; it also stands where the run's path is expected."""
    from mmfit import Predictor

    manifest, pred, _, _ = fitted
    assert isinstance(pred, Predictor) and pred.path.is_dir() and (pred / ENSEMBLE).exists()
    assert pred.device == "cpu"  # auto, on a machine without CUDA
    df = pd.read_csv(manifest).head(9)
    labels = pred.predict(df, root=manifest.parent)
    proba = pred.predict_proba(df, root=manifest.parent)
    assert list(proba.columns) == ["a", "b", "c"] and np.allclose(proba.sum(1), 1, atol=1e-5)
    assert np.allclose(proba.to_numpy(), labels[["label_prob_a", "label_prob_b", "label_prob_c"]].to_numpy())
    assert list(proba.idxmax(1)) == list(labels["label"])
    with pytest.raises(ValueError, match="not a classification or multilabel task"):
        pred.predict_proba(df, root=manifest.parent, task="nope")
    # the leaderboard: every candidate of ensemble.json with its validation scores and weight
    board = pred.leaderboard()
    spec = json.loads((pred / ENSEMBLE).read_text())
    assert len(board) == len(spec["validation"]["label"])
    assert abs(board["weight"].sum() - 1) < 1e-9 and board["weight"].iloc[0] == board["weight"].max()
    chosen = board[board["weight"] > 0]
    assert {(r.member, r.head) for r in chosen.itertuples()} == {(w["member"], w["head"]) for w in spec["weights"]["label"]}
    assert board.loc[(board["member"] == "probe") & (board["head"] == "fused"), "val_macro_f1"].item() == \
        spec["validation"]["label"]["probe/fused"]["macro_f1"]
    r = CliRunner().invoke(app, ["leaderboard", str(pred), "-o", str(tmp_path / "board.csv")])
    assert r.exit_code == 0 and "convex" in r.output, r.output
    assert len(pd.read_csv(tmp_path / "board.csv")) == len(board)
    # embeddings of any run: the fused vector the heads read, or one modality's
    emb = pred.extract_embedding(df, root=manifest.parent)
    assert emb.shape[0] == 9 and emb.ndim == 2 and np.isfinite(emb).all()
    text = pred.extract_embedding(df, root=manifest.parent, modality="text")
    assert text.shape[0] == 9 and not np.allclose(text[0], text[1])
    with pytest.raises(ValueError, match="modality 'nope'"):
        pred.extract_embedding(df, root=manifest.parent, modality="nope")
    # evaluate without data: its own test split, as recorded
    assert abs(pred.evaluate(ablation=False)["metrics"]["label"]["macro_f1"]
               - Run(pred).evaluation("test")["metrics"]["label"]["macro_f1"]) < 1e-9
    # save: a complete copy that predicts the same; never over an existing folder
    saved = pred.save(tmp_path / "saved")
    assert saved.path == tmp_path / "saved" and not (tmp_path / "saved" / "checkpoints").exists()
    assert np.allclose(saved.predict_proba(df, root=manifest.parent).to_numpy(), proba.to_numpy(), atol=1e-6)
    assert np.allclose(Predictor.load(tmp_path / "saved", device="cpu").extract_embedding(df, root=manifest.parent),
                       emb, atol=1e-5)
    with pytest.raises(FileExistsError):
        pred.save(tmp_path / "saved")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".saved")]


@pytest.mark.slow
def test_the_predictor_on_a_gpu_predicts_as_on_the_cpu(fitted):
    """Where CUDA is present: the same probabilities from the GPU (torch) and, with onnxruntime-gpu,
    ONNX Runtime's CUDA provider. Skipped cleanly elsewhere."""
    import torch

    from mmfit import Predictor

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here")
    manifest, pred, _, _ = fitted
    df = pd.read_csv(manifest).head(9)
    cpu = Predictor.load(pred.path, device="cpu").predict_proba(df, root=manifest.parent).to_numpy()
    gpu = Predictor.load(pred.path, device="cuda")
    assert gpu.device == "cuda"
    assert np.allclose(gpu.predict_proba(df, root=manifest.parent).to_numpy(), cpu, atol=1e-4)
    if (pred / "model.onnx").exists():
        onnx = Predictor.load(pred.path, device="cuda", backend="onnx")
        assert np.allclose(onnx.predict_proba(df, root=manifest.parent).to_numpy(), cpu, atol=1e-3), onnx.model.providers


@pytest.mark.slow
def test_a_second_fit_computes_no_embeddings_and_init_writes_the_config(fitted, tmp_path):
    manifest, run, _, _ = fitted
    cache = Run(run).config().data.cache_dir
    buf = io.StringIO()
    cheap = "recipe.exclude=[trees,neighbours,finetune,scratch]"  # the convex member and the probe
    api.fit_run(manifest, "label", time_limit=3, run_dir=tmp_path / "again", console=Console(file=buf, width=200),
                overrides=[f"data.cache_dir={cache}", *SMALL, cheap])
    log = buf.getvalue()
    for m in ("image", "text", "audio"):
        assert f"{m}: frozen encoder's outputs for 60 rows, 0 computed (60 from the cache)" in log, log
    out = tmp_path / "cfg.yaml"
    r = CliRunner().invoke(app, ["init", str(manifest), "--target", "label", "--column", "group=ignore", "-o", str(out)])
    assert r.exit_code == 0, r.output + repr(r.exception)
    cfg = load_config(out)
    assert "group" not in cfg.data.columns and cfg.data.targets["label"].type == "classification"
    assert "#   id: ignore (identifier" in out.read_text()
    raw = yaml.safe_load(out.read_text())
    assert raw["model"]["encoders"]["text"]["name"] == "minilm" and raw["recipe"]["enabled"] is True
    # the written config trains the recipe, as the manifest did
    r = CliRunner().invoke(app, ["train", str(out), "recipe.time_limit=3", f"data.cache_dir={cache}", cheap,
                                 *SMALL, "--output", str(tmp_path / "from-init")])
    assert r.exit_code == 0, r.output + repr(r.exception)
    assert (tmp_path / "from-init" / ENSEMBLE).exists()


def test_zero_config_errors_name_what_to_do(tmp_path):
    df = pd.DataFrame({"a": [f"note {i} on x y" for i in range(10)], "label": ["p", "q"] * 5})
    path = tmp_path / "m.csv"
    df.to_csv(path, index=False)
    r = CliRunner().invoke(app, ["train", str(path), "--target", "lable"])
    assert r.exit_code != 0 and "did you mean 'label'" in str(r.exception)
    r = CliRunner().invoke(app, ["train", str(path)])
    assert r.exit_code != 0 and "--target" in str(r.exception)
    r = CliRunner().invoke(app, ["train", str(path), "--target", "label", "--time-limit", "soon"])
    assert r.exit_code != 0 and "time limit 'soon'" in str(r.exception)


def test_a_run_stopped_by_bad_rows_leaves_its_output_free_for_the_next_try(tmp_path):
    from conftest import make_dataset

    from mmfit.data.errors import DataError

    manifest = make_dataset(tmp_path / "data", n=30)
    (tmp_path / "data" / "img" / "7.png").write_bytes(b"not an image")
    for _ in range(2):  # the second try meets the same rows, not "already exists"
        with pytest.raises(DataError, match=r"(?s)counted from 0.*row 7, column 'image', file '.*7.png'"):
            api.fit(manifest, "label", time_limit=30, run_dir=tmp_path / "run", console=Console(quiet=True),
                    overrides=SMALL)
        assert not (tmp_path / "run").exists()
    # a folder given that exists stays, and a tree of empty folders is no run
    (tmp_path / "mine" / "empty").mkdir(parents=True)
    with pytest.raises(DataError):
        api.fit(manifest, "label", time_limit=30, run_dir=tmp_path / "mine", console=Console(quiet=True),
                overrides=SMALL)
    assert (tmp_path / "mine").is_dir()
    # kept with the image absent: the ensemble run counts and lists it, as its members do
    run = api.fit_run(manifest, "label", time_limit=10, run_dir=tmp_path / "run", console=Console(quiet=True),
                      overrides=SMALL + ["data.on_error=missing", "recipe.exclude=[trees,neighbours,finetune,scratch]"])
    assert json.loads((run / "skipped.json").read_text()) == {"rows": 0, "reasons": 1, "cells_absent": 1}
    assert "7,image," in (run / "skipped.csv").read_text()


@pytest.mark.slow
def test_chosen_members_are_refit_on_train_and_val_and_the_ensemble_uses_them(fitted, tmp_path, monkeypatch):
    """Without a time limit every chosen member (and the probe an LP-FT member starts from) is trained
    again on train + val for its best epoch count; the ensemble predicts with the refits under the
    weights and temperatures chosen on validation, and says so."""
    from conftest import make_dataset
    from mmfit.recipe import orchestrate as recipe

    plans = recipe.member_configs

    def short(base, *args, **kwargs):  # the trained members (the probe, and the finetune member that
        out = plans(base, *args, **kwargs)  # starts from it), two epochs each
        out = {k: c for k, c in out.items() if k in ("probe", "finetune")}
        for c in out.values():
            c.train.epochs = 2
        return out

    monkeypatch.setattr(recipe, "member_configs", short)
    manifest = make_dataset(tmp_path / "data", n=60)
    cache = Run(fitted[1]).config().data.cache_dir  # the same files: their features are cached there
    # the convex member is fitted on train + val from the start (never refit): left out here, where
    # on rows this easy it would take all the weight
    run = api.fit(manifest, "label", time_limit=None, run_dir=tmp_path / "run",
                  overrides=[f"data.cache_dir={cache}", *SMALL], console=Console(file=io.StringIO()))
    spec = json.loads((run / ENSEMBLE).read_text())
    chosen = {w["member"] for w in spec["weights"]["label"]}
    assert chosen <= set(spec["refit"])
    assert ("probe" in spec["refit"]) == bool(chosen & {"probe", "finetune"})  # the finetune member starts from it
    assert all(w["trained_on"] == "train+val" for w in spec["weights"]["label"])
    for name, info in spec["refit"].items():
        original, refit = Run(run / info["from"]), Run(run / spec["members"][name])
        assert spec["members"][name] == f"members/{name}-refit"
        assert info["epochs"] == original.evaluation("val")["best_epoch"] + 1 == refit.config().train.epochs
        before, after = load_run(original).data(), load_run(refit).data()
        assert len(after["val"]) == 0 and after["test"].rows.tolist() == before["test"].rows.tolist()
        assert sorted(after["train"].rows.tolist()) == sorted(before["train"].rows.tolist() + before["val"].rows.tolist())
        assert info["train_rows"] == len(after["train"])
    recorded = Run(run).evaluation("test")["metrics"]["label"]
    live = api.evaluate(run, console=Console(quiet=True))["metrics"]["label"]  # loads the refit members
    assert abs(recorded["macro_f1"] - live["macro_f1"]) < 1e-9 and abs(recorded["auroc"] - live["auroc"]) < 1e-4
    assert "before their refit" in Run(run).evaluation("val")["note"]
    assert "refit on train + val" in api.evaluate(run, split="val", console=Console(quiet=True))["note"]


@pytest.mark.slow
def test_a_dataframe_and_a_class_folder_fit_like_a_manifest(fitted, tmp_path, monkeypatch):
    """mmfit.fit(df) and `mmfit train FOLDER` run the whole recipe (members read back the rows they
    trained on from the DataFrame, not from a manifest file there is none of); a class folder's table
    is kept in the run, so the run evaluates on its own splits later."""
    import numpy as np
    from PIL import Image

    import mmfit
    from conftest import make_dataset
    from mmfit.recipe import orchestrate as recipe

    plans = recipe.member_configs

    def probe_only(base, *args, **kwargs):  # the probe alone, two epochs: what differs here is where the rows come from
        c = plans(base, *args, **kwargs)["probe"]
        c.train.epochs = 2
        return {"probe": c}

    monkeypatch.setattr(recipe, "member_configs", probe_only)
    cache = [f"data.cache_dir={Run(fitted[1]).config().data.cache_dir}", *SMALL]
    manifest = make_dataset(tmp_path / "data", n=45)
    df = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    run = mmfit.fit(df, "label", root=manifest.parent, run_dir=tmp_path / "df-run", overrides=cache,
                    console=Console(file=io.StringIO()))
    assert Run(run).evaluation("test")["metrics"]["label"]["n"] > 0
    assert len(mmfit.Predictor.load(run).predict(df.head(3), root=manifest.parent)) == 3
    with pytest.raises(FileNotFoundError, match="data=df"):
        api.evaluate(run, console=Console(quiet=True))
    for k, c in enumerate("abc"):
        (tmp_path / "folder" / c).mkdir(parents=True)
        for i in range(10):
            arr = np.full((16, 16), 40, np.uint8)
            arr[:, 5 * k:5 * k + 5] = 220
            Image.fromarray(arr).save(tmp_path / "folder" / c / f"{i}.png")
    r = CliRunner().invoke(app, ["train", str(tmp_path / "folder"), "--output", str(tmp_path / "folder-run"), *cache])
    assert r.exit_code == 0, r.output
    kept = pd.read_csv(tmp_path / "folder-run" / "manifest.csv")
    assert len(kept) == 30 and set(kept["label"]) == {"a", "b", "c"}
    again = api.evaluate(tmp_path / "folder-run", console=Console(quiet=True))["metrics"]["label"]
    assert again["macro_f1"] == Run(tmp_path / "folder-run").evaluation("test")["metrics"]["label"]["macro_f1"]
    # new images as a folder: flat (to label), or in class subfolders (to score)
    (tmp_path / "new" / "a").mkdir(parents=True)
    (tmp_path / "new" / "b").mkdir()
    for c in ("a", "b"):
        Image.open(tmp_path / "folder" / c / "0.png").save(tmp_path / "new" / c / "x.png")
    (tmp_path / "new" / "b" / "notes.txt").write_text("not an image")
    out = api.predict(tmp_path / "folder-run", tmp_path / "new", tmp_path / "p.csv", console=Console(quiet=True))
    assert out["image"].tolist() == ["a/x.png", "b/x.png"] and set(out["label"]) <= {"a", "b", "c"}
    scored = api.evaluate(tmp_path / "folder-run", data=tmp_path / "new", console=Console(quiet=True))
    assert scored["metrics"]["label"]["n"] == 2
    flat = mmfit.Predictor.load(tmp_path / "folder-run").table(tmp_path / "new" / "a")[0]
    assert flat.columns.tolist() == ["image"] and flat["image"].tolist() == ["x.png"]  # no label: not scored
    with pytest.raises(ValueError, match="one file input"):
        mmfit.Predictor.load(run).table(tmp_path / "new")
    one = api.predict(tmp_path / "folder-run", tmp_path / "new" / "a" / "x.png", console=Console(quiet=True))
    assert one["image"].tolist() == ["x.png"] and one["label"].iloc[0] == out["label"].iloc[0]  # one file alone


@pytest.mark.slow
def test_the_readme_quickstart_runs(fitted, tmp_path, monkeypatch):
    """The README's Python quickstart, as written, on a tiny manifest named as it says (the time limit
    shortened; the cache kept in the test's folder)."""
    import re
    from pathlib import Path

    from conftest import make_dataset

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    code = re.search(r"## Quickstart.*?```python\n(.*?)```", readme, re.S).group(1)
    assert 'time_limit="10m"' in code
    manifest = make_dataset(tmp_path, n=45)
    pd.read_csv(manifest).rename(columns={"label": "diagnosis"}).drop(columns=["score", "tags"], errors="ignore") \
        .to_csv(tmp_path / "patients.csv", index=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MMFIT_CACHE", str(Run(fitted[1]).config().data.cache_dir))  # the same files
    from dataclasses import replace

    from mmfit.registry import ENCODERS

    # the image side the zero-config takes from EfficientNet-Lite0: SMALL's 32 px, as in that cache
    monkeypatch.setitem(ENCODERS._info, "efficientnet-lite0", replace(ENCODERS.info("efficientnet-lite0"), input_size=32))
    from mmfit.recipe import orchestrate as recipe

    plans = recipe.member_configs  # the cheap members (what runs is the README's code, not the recipe)
    monkeypatch.setattr(recipe, "member_configs", lambda *a, **k: {n: c for n, c in plans(*a, **k).items()
                                                                   if n in ("convex", "probe")})
    space: dict = {}
    exec(compile(code.replace('time_limit="10m"', 'time_limit="4s"'), "README.md", "exec"), space)
    assert space["proba"].shape == (45, 3) and space["vectors"].shape[0] == 45
    assert (tmp_path / "models" / "diagnosis" / ENSEMBLE).exists()
