"""The everyday surface: importing changes nothing in the process, the command line's shared
flags (--version, -h, -o/--output, --device), and device names read one way."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from mmfit.cli import app
from mmfit.device import onnx_providers, resolve_device


def test_import_changes_no_environment_variable():
    code = ("import os; before = dict(os.environ); import mmfit, mmfit.api, mmfit.cli; "
            "changed = {k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k)}; "
            "print(sorted(changed))")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_version_and_short_help():
    from mmfit import __version__

    r = CliRunner().invoke(app, ["--version"])
    assert r.exit_code == 0 and __version__ in r.output
    r = CliRunner().invoke(app, ["-h"])
    assert r.exit_code == 0 and "leaderboard" in r.output
    r = CliRunner().invoke(app, ["predict", "-h"])
    assert r.exit_code == 0 and "--device" in r.output and "--output" in r.output


@pytest.mark.parametrize("command", ["train", "pretrain", "demo", "evaluate", "robustness", "predict", "serve",
                                     "tune", "distill"])
def test_every_command_that_runs_a_model_takes_device(command):
    r = CliRunner().invoke(app, [command, "--help"], terminal_width=200)
    assert r.exit_code == 0 and "--device" in r.output, r.output


@pytest.mark.parametrize("command", ["train", "pretrain", "demo", "init", "predict", "merge", "prune", "quantize",
                                     "distill", "export", "tune", "report", "augment-preview", "leaderboard"])
def test_one_output_flag(command):
    r = CliRunner().invoke(app, [command, "--help"], terminal_width=200)
    assert "-o" in r.output and "--output" in r.output and "--run-dir" not in r.output and "--out " not in r.output


def test_device_names():
    import torch

    assert resolve_device("cpu") == "cpu" and resolve_device("CPU") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="auto .* cpu, cuda or cuda:N"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU is visible"):
            resolve_device("cuda:0")
    else:
        assert resolve_device("cuda:0") == "cuda:0"
        with pytest.raises(ValueError, match="numbered from 0"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_onnx_providers_fall_back_to_the_cpu():
    ort = pytest.importorskip("onnxruntime")
    assert onnx_providers("cpu") == ["CPUExecutionProvider"]
    gpu = onnx_providers("cuda:0")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert gpu[0] == ("CUDAExecutionProvider", {"device_id": 0}) and gpu[-1] == "CPUExecutionProvider"
    else:
        assert gpu == ["CPUExecutionProvider"]


def test_a_bad_device_is_a_message_not_a_traceback(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    r = subprocess.run([sys.executable, "-m", "mmfit.cli", "evaluate", str(tmp_path), "--device", "cuda"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "no CUDA GPU is visible" in r.stdout + r.stderr and "Traceback" not in r.stderr
