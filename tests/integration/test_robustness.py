"""`mmfit robustness RUN` end to end on a tiny run: every input corrupted at three severities, FGSM
and PGD, each modality removed; the same numbers under the same seed; JSON, plot and report."""

import json

import pytest
from typer.testing import CliRunner

from conftest import make_dataset, tiny_config


@pytest.mark.slow
def test_robustness_harness(tmp_path, quiet_console):
    import mmfit
    from mmfit.cli import app

    data = make_dataset(tmp_path / "data", n=45)
    run = mmfit.train(tiny_config(data, tmp_path, train__epochs=3), run_dir=tmp_path / "run", console=quiet_console)
    r = CliRunner().invoke(app, ["robustness", str(run), "--seed", "3"])
    assert r.exit_code == 0, r.output
    res = json.loads((run / "eval" / "robustness.json").read_text())
    assert res["task"] == "label" and res["metric"] == "macro_f1" and res["rows"] == 9
    assert set(res["corruptions"]) == {"image/gaussian_noise", "image/blur", "image/occlusion", "image/jpeg",
                                       "audio/noise_snr", "audio/clipping", "audio/resampling", "text/typos",
                                       "text/word_dropout", "x1/noise", "x1/missing", "color/missing"}
    assert all(set(v) == {"1", "2", "3"} for v in res["corruptions"].values())
    assert set(res["attacks"]) == {"fgsm", "pgd"} and set(res["without"]) == {"image", "audio", "text", "tabular"}
    assert res["attacks"]["pgd"]["2"] <= res["clean"] + 1e-9  # the strongest attack never helps
    assert (run / "eval" / "robustness.png").exists()
    again = mmfit.api.robustness(run, seed=3, console=quiet_console)
    assert again["corruptions"] == res["corruptions"] and again["attacks"] == res["attacks"]
    assert CliRunner().invoke(app, ["report", str(run)]).exit_code == 0
    assert "Robustness" in (run / "report.html").read_text()
