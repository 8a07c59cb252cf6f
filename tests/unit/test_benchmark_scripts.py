"""Every benchmark script BENCHMARKS.md cites still imports against the code it measures (a renamed
function would otherwise be found only when someone reruns a figure). Nothing is run or read from data."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.mark.parametrize("script", sorted(p.name for p in BENCH.glob("*.py")))
def test_the_benchmark_script_imports(script, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_{script[:-3]}", BENCH / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert script.startswith("_") or callable(getattr(module, "main", None))
    sys.modules.pop(f"bench_{script[:-3]}", None)
