"""The README and docs/ cannot drift from the code: every code block is checked against it. Commands
(`mmfit ...` lines) are parsed by the command line itself, YAML blocks load as configs, CSV blocks
read as manifests, Python blocks compile and name only what exists (the README's quickstart runs,
end to end, in test_fit.py); docs/config.md is what config.py generates; the README stays short."""

from __future__ import annotations

import ast
import io
import re
import shlex
from pathlib import Path

import pandas as pd
import pytest
import typer
import yaml

import mmfit
from mmfit.cli import app
from mmfit.config import load_config, reference

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BASE = {"data": {"columns": {"scan": "image", "report": "text", "voice_note": "audio", "age": "numeric",
                             "smoker": "categorical"}, "targets": {"diagnosis": "classification"}}}


def blocks(lang: str) -> list[tuple[str, str]]:
    """(page:line, code) of every fenced block of `lang` in the README and docs/."""
    out = []
    for page in PAGES:
        text = page.read_text()
        for m in re.finditer(rf"^```{lang}\n(.*?)^```", text, re.S | re.M):
            out.append((f"{page.name}:{text[:m.start()].count(chr(10)) + 1}", m.group(1)))
    return out


def commands(code: str) -> list[list[str]]:
    """The `mmfit` command lines of a shell block, as argument lists (comments dropped)."""
    out = []
    for line in code.replace("\\\n", " ").splitlines():
        for part in re.split(r"\s&&\s", line):
            words = shlex.split(part, comments=True)
            if words[:1] == ["mmfit"]:
                out.append(words[1:])
    return out


def test_the_readme_is_short_and_keeps_the_ci_test_command():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) <= 15_000, len(readme.encode())
    ci = (ROOT / ".ci" / "run").read_text()
    test_cmd = re.search(r"TEST_CMD='([^']+)'", ci).group(1)
    assert test_cmd in readme and "pip install . && mmfit demo" in readme


def test_the_config_reference_is_generated_from_config_py():
    assert (ROOT / "docs" / "config.md").read_text() == reference(), \
        "docs/config.md is stale: python -m mmfit.config > docs/config.md"


def test_every_page_link_points_at_a_file():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name}: link to {target} finds no file"


@pytest.mark.parametrize("where,code", blocks("bash"))
def test_shell_blocks_are_commands_the_cli_takes(where, code):
    cli = typer.main.get_command(app)
    found = commands(code)
    for args in found:
        if args[0].startswith("-"):
            continue
        sub = cli.get_command(None, args[0])
        assert sub is not None, f"{where}: no command `mmfit {args[0]}`"
        try:
            sub.make_context(args[0], args[1:], resilient_parsing=False)
        except Exception as e:  # click's usage errors: an option or argument the command does not take
            raise AssertionError(f"{where}: `mmfit {' '.join(args)}`: {e}") from None
    assert found or "pip install" in code, f"{where}: a shell block without any mmfit command"


def _merge(base: dict, block: dict) -> dict:
    out = dict(base)
    for k, v in block.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k not in ("columns", "targets"):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


@pytest.mark.parametrize("where,code", blocks("yaml"))
def test_yaml_blocks_are_configs_that_load(where, code):
    raw = yaml.safe_load(code)
    assert isinstance(raw, dict), where
    cfg = load_config(_merge(BASE, raw), need_targets=False)
    assert cfg.data.columns, where


@pytest.mark.parametrize("where,code", blocks("csv"))
def test_csv_blocks_are_manifests(where, code):
    df = pd.read_csv(io.StringIO(code))
    assert len(df) >= 1 and "diagnosis" in df.columns and df.columns[0].endswith("id"), where


@pytest.mark.parametrize("where,code", blocks("python"))
def test_python_blocks_compile_and_name_what_exists(where, code):
    tree = ast.parse(code, where)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id == "mmfit":
                assert hasattr(mmfit, node.attr), f"{where}: mmfit.{node.attr} does not exist"
            if node.value.id == "pred":
                assert hasattr(mmfit.Predictor, node.attr), f"{where}: Predictor.{node.attr} does not exist"
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and \
                isinstance(node.value.value, ast.Name) and node.value.value.id == "mmfit" and node.value.attr == "api":
            assert hasattr(mmfit.api, node.attr), f"{where}: mmfit.api.{node.attr} does not exist"
