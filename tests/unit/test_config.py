from pathlib import Path

import pytest

from mmfit.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]
BASE = {"data": {"columns": {"t": "text"}, "targets": {"y": "classification"}}}


def test_every_shipped_config_loads_and_validates():
    configs = sorted((ROOT / "src" / "mmfit" / "configs").glob("*.yaml")) + sorted((ROOT / "configs").glob("*.yaml"))
    assert configs
    for path in configs:
        cfg = load_config(path)
        assert cfg.data.columns and cfg.data.targets


def test_misspelt_key_names_its_path_and_suggests():
    with pytest.raises(ConfigError, match=r"unknown key 'train.epocs'; did you mean 'epochs'"):
        load_config({**BASE, "train": {"epocs": 3}})
    with pytest.raises(ConfigError, match=r"data.image.sise.*did you mean 'size'"):
        load_config({"data": {**BASE["data"], "image": {"sise": 3}}})


def test_wrong_types_and_choices_are_errors_with_path():
    with pytest.raises(ConfigError, match=r"train.epochs: expected an integer"):
        load_config({**BASE, "train": {"epochs": "three"}})
    with pytest.raises(ConfigError, match=r"data.columns.t.role: 'hologram' is not one of"):
        load_config({"data": {"columns": {"t": "hologram"}, "targets": {"y": "classification"}}})
    with pytest.raises(ConfigError, match=r"unknown encoder 'scrach'; did you mean 'scratch'"):
        load_config({**BASE, "model": {"encoders": {"text": "scrach"}}})
    with pytest.raises(ConfigError, match=r"unknown fusion 'gate'; did you mean 'gated'"):
        load_config({**BASE, "model": {"fusion": "gate"}})
    with pytest.raises(ConfigError, match=r"model.encoders.txt.*did you mean 'text'"):
        load_config({**BASE, "model": {"encoders": {"txt": "scratch"}}})
    with pytest.raises(ConfigError, match=r"train.monitor: task 'diag'"):
        load_config({**BASE, "train": {"monitor": "diag/macro_f1"}})


def test_dotted_overrides_parse_yaml_values():
    cfg = load_config(BASE, ["train.epochs=3", "train.lr=1e-4", "model.fusion=gated", "data.on_error=skip"])
    assert cfg.train.epochs == 3 and cfg.train.lr == pytest.approx(1e-4)
    assert cfg.model.fusion == "gated" and cfg.data.on_error == "skip"
    with pytest.raises(ConfigError, match="did you mean 'batch_size'"):
        load_config(BASE, ["train.batchsize=3"])
    with pytest.raises(ConfigError, match="key.path=value"):
        load_config(BASE, ["train.epochs"])


def test_resolved_config_round_trips_through_yaml(tmp_path):
    cfg = load_config(BASE, ["train.epochs=7"])
    p = tmp_path / "c.yaml"
    p.write_text(cfg.to_yaml())
    again = load_config(p)
    assert again.to_dict() == cfg.to_dict()
    assert again.data.columns["t"].role == "text"


def test_cli_validate(tmp_path):
    from typer.testing import CliRunner

    from mmfit.cli import app

    p = tmp_path / "c.yaml"
    p.write_text("data:\n  columns: {t: text}\n  targets: {y: classification}\ntrain: {epochs: 2}\n")
    r = CliRunner().invoke(app, ["validate", str(p)])
    assert r.exit_code == 0 and "valid" in r.output
    r = CliRunner().invoke(app, ["validate", str(p), "train.epoch=3"])
    assert r.exit_code != 0
    assert "did you mean 'epochs'" in str(r.exception)


def test_cli_reports_bad_input_as_a_message_not_a_traceback(tmp_path):
    import subprocess
    import sys

    p = tmp_path / "c.yaml"
    p.write_text("data:\n  columns: {t: text}\n  targets: {y: classification}\ntrain: {epocs: 2}\n")
    r = subprocess.run([sys.executable, "-m", "mmfit.cli", "train", str(p)], capture_output=True, text=True)
    assert r.returncode == 2
    assert "unknown key 'train.epocs'; did you mean 'epochs'" in r.stdout
    assert "Traceback" not in r.stdout + r.stderr


def test_durations_read_the_same_in_config_overrides_and_the_api():
    for given, want in ((600, 600.0), ("600", 600.0), ("90s", 90.0), ("10m", 600.0), ("1.5h", 5400.0)):
        cfg = load_config(BASE, [f"train.time_limit={given}", f"recipe.time_limit={given}"])
        assert cfg.train.time_limit == want and cfg.recipe.time_limit == want
    assert load_config({**BASE, "recipe": {"time_limit": "2m"}}).recipe.time_limit == 120.0
    for bad in ("ten minutes", "-5m", "0", "true"):
        with pytest.raises(ConfigError, match="train.time_limit"):
            load_config(BASE, [f"train.time_limit={bad}"])
    from mmfit.api import seconds

    assert seconds("10m") == 600.0 and seconds(None) is None


def test_overrides_may_be_a_dict_of_dotted_keys_or_nested_mappings():
    cfg = load_config(BASE, {"train.epochs": 4, "model": {"fusion": "gated"}, "data.text": {"max_length": 12}})
    assert cfg.train.epochs == 4 and cfg.model.fusion == "gated" and cfg.data.text.max_length == 12
    assert cfg.data.text.vocab_size == load_config(BASE).data.text.vocab_size  # a nested mapping merges, not replaces
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        load_config(BASE, {"train.epocs": 4})
    with pytest.raises(ConfigError, match="key.path=value"):
        load_config(BASE, [{"train.epochs": 4}])


def test_commands_that_read_a_config_file_themselves_name_a_missing_or_bad_file(tmp_path):
    """tune and distill read the YAML before filling in parts of it: a missing file, bad YAML or a list
    at the top level is a ConfigError naming the file, as load_config's is."""
    from mmfit.optimize.tune import tune

    bad = {"missing.yaml": None, "broken.yaml": "a: [1, 2", "list.yaml": "- 1\n- 2\n"}
    for name, text in bad.items():
        if text is not None:
            (tmp_path / name).write_text(text)
        for read in (load_config, lambda p: tune(p, out=tmp_path / "study")):
            with pytest.raises(ConfigError, match=name):
                read(tmp_path / name)
    assert not (tmp_path / "study").exists()
