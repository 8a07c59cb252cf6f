"""A run directory stands alone: it records resolved paths, and evaluate / report / predict work from
any working directory, after the run moves together with its data, and after it moves beside its
manifest. Training selects on validation rows only; resume keeps the run's own config and device."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from conftest import make_dataset, tiny_config
from mmfit import api
from mmfit.cli import app
from mmfit.run.layout import CONFIG, INFO, REPORT
from mmfit.run.store import Run


@pytest.fixture
def relative_run(tmp_path, monkeypatch, quiet_console):
    """A run trained the way a user types it: relative paths from the project folder."""
    project = tmp_path / "project"
    make_dataset(project / "data", n=30)
    monkeypatch.chdir(project)
    cfg = tiny_config(Path("data/manifest.csv"), Path("."), train__epochs=1)
    run = api.train(cfg, console=quiet_console)
    return project, Path(run)


def _evaluate(run) -> dict:
    r = CliRunner().invoke(app, ["evaluate", str(run)])
    assert r.exit_code == 0, r.output + repr(r.exception)
    return json.loads((Path(run) / "eval" / "test.json").read_text())


def test_the_run_records_resolved_paths_and_what_they_were_given_as(relative_run):
    project, run = relative_run
    cfg = yaml.safe_load((run / CONFIG).read_text())
    assert cfg["data"]["manifest"] == str(project / "data" / "manifest.csv")
    assert Path(cfg["data"]["cache_dir"]).is_absolute() and Path(cfg["train"]["output_dir"]).is_absolute()
    paths = json.loads((run / INFO).read_text())["paths"]
    assert paths["data.manifest"]["given"] == "data/manifest.csv"
    assert (run / paths["data.manifest"]["from_run"]).resolve() == project / "data" / "manifest.csv"


def test_evaluate_report_and_predict_from_another_directory(relative_run, tmp_path, monkeypatch):
    project, run = relative_run
    before = _evaluate(run)["metrics"]["label"]["macro_f1"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert _evaluate(run)["metrics"]["label"]["macro_f1"] == before
    rel = Path("..") / run.relative_to(tmp_path)  # the run named relative to the new working directory
    assert _evaluate(rel)["metrics"]["label"]["macro_f1"] == before
    r = CliRunner().invoke(app, ["report", str(rel)])
    assert r.exit_code == 0, r.output + repr(r.exception)
    page = (run / REPORT).read_text()
    assert "Calibration</h2><p class=muted>not drawn" not in page  # the test rows were found and predicted
    r = CliRunner().invoke(app, ["predict", str(run), str(project / "data" / "manifest.csv"), "-o", "p.csv"])
    assert r.exit_code == 0, r.output + repr(r.exception)
    assert (elsewhere / "p.csv").exists()


def test_a_run_moved_with_its_data_or_beside_its_manifest_still_reads_it(relative_run, tmp_path, monkeypatch):
    project, run = relative_run
    before = _evaluate(run)["metrics"]["label"]["macro_f1"]
    monkeypatch.chdir(tmp_path)
    moved = tmp_path / "moved"
    shutil.move(project, moved)  # the old paths are gone
    run = moved / run.relative_to(project)
    assert _evaluate(run)["metrics"]["label"]["macro_f1"] == before
    beside = moved / "data" / run.name  # the run folder dropped next to its manifest
    shutil.move(run, beside)
    shutil.move(moved / "data", tmp_path / "other")  # ... and that folder moved again
    assert _evaluate(tmp_path / "other" / run.name)["metrics"]["label"]["macro_f1"] == before


def test_a_run_from_before_resolved_paths_is_found_from_a_folder_above_it(relative_run, tmp_path, monkeypatch):
    project, run = relative_run
    cfg = yaml.safe_load((run / CONFIG).read_text())
    cfg["data"]["manifest"] = "data/manifest.csv"  # as older runs recorded it: relative to where training ran
    (run / CONFIG).write_text(yaml.safe_dump(cfg))
    (run / INFO).unlink()
    monkeypatch.chdir(tmp_path)
    assert Run(run).config().data.manifest == str(project / "data" / "manifest.csv")
    _evaluate(run)


def test_an_empty_validation_split_is_an_error_that_says_what_to_do(dataset, tmp_path, quiet_console):
    cfg = tiny_config(dataset, tmp_path, data__split={"val": 0.0, "test": 0.2})
    with pytest.raises(ValueError, match=r"validation split is empty.*data.split.val.*train.selection: last"):
        api.train(cfg, run_dir=tmp_path / "r", console=quiet_console)
    r = CliRunner().invoke(app, ["train", _yaml(tmp_path, cfg), "--output", str(tmp_path / "r2")])
    assert r.exit_code != 0 and "validation split is empty" in str(r.exception)


def test_selection_last_keeps_the_last_epoch_without_validation(dataset, tmp_path, quiet_console):
    cfg = tiny_config(dataset, tmp_path, data__split={"val": 0.0, "test": 0.2}, train__selection="last",
                      train__epochs=3)
    run = api.train(cfg, run_dir=tmp_path / "r", console=quiet_console)
    lines = Run(run).history()
    assert [x["epoch"] for x in lines] == [0, 1, 2]  # no early stopping
    assert all(x["val"] == {} and x["monitor"] is None for x in lines)  # nothing labelled val
    test = Run(run).evaluation("test")
    assert test["best_epoch"] == 2 and test["selection"] == "last"
    assert not Run(run).has("eval/val.json")


def test_resume_keeps_the_runs_own_config_and_device(dataset, tmp_path, quiet_console, monkeypatch):
    from mmfit.training import loop

    cfg = tiny_config(dataset, tmp_path, train__epochs=2, train__device="cpu")
    run = api.train(cfg, run_dir=tmp_path / "r", console=quiet_console)
    raw = yaml.safe_load((run / CONFIG).read_text())
    raw["train"]["epochs"] = 3  # continue for one more epoch
    (run / CONFIG).write_text(yaml.safe_dump(raw, sort_keys=False))
    seen = []
    real = loop.Dist.from_env
    monkeypatch.setattr(loop.Dist, "from_env", staticmethod(lambda device, *a: seen.append(device) or real(device, *a)))
    loop.train(resume=run, console=quiet_console)
    assert seen == ["cpu"]
    assert [x["epoch"] for x in Run(run).history()] == [0, 1, 2]
    with pytest.raises(ValueError, match="not both"):
        loop.train(load_cfg(run), resume=run, console=quiet_console)


def test_resume_with_a_reordered_config_says_so(dataset, tmp_path, quiet_console):
    from mmfit.training import loop

    run = api.train(tiny_config(dataset, tmp_path, train__epochs=1), run_dir=tmp_path / "r", console=quiet_console)
    raw = yaml.safe_load((run / CONFIG).read_text())
    raw["train"]["epochs"] = 2
    (run / CONFIG).write_text(yaml.safe_dump(raw, sort_keys=True))  # columns now in another order
    with pytest.raises(ValueError, match="optimiser state does not fit"):
        loop.train(resume=run, console=quiet_console)


def load_cfg(run):
    from mmfit.config import load_config

    return load_config(run / CONFIG)


def _yaml(tmp_path, cfg) -> str:
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return str(p)
