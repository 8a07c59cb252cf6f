"""The layering of src/mmfit, enforced: imports point one way and never in a cycle.

Layers, left to right (a module imports only from its own layer or layers to its left):

    config, registry, errors, version, device, tasks  <-  data  <-  models  <-  evaluation  <-  training, run
        <-  recipe, optimize, deploy, cluster  <-  report  <-  api (and the package's __init__)  <-  cli

plus two rules inside a layer: deploy serves a finished run and never imports training, and the
run store (run/ but loaded.py) imports nothing right of data but itself. Every
import counts, function-level ones included (they are read from the source with ast, not run).
Task kinds are declared once (mmfit/tasks.py): no other module compares a value with a kind's name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import mmfit
from mmfit.tasks import KIND_NAMES

LAYERS = [
    {"config", "registry", "errors", "version", "device", "tasks"},
    {"data"},
    {"models"},
    {"evaluation"},  # below training: training validates with it; it never reaches up into training
    {"training", "run"},
    {"recipe", "optimize", "deploy", "cluster"},
    {"report"},
    {"api", ""},  # "": the package's own __init__
    {"cli"},
]
FORBIDDEN = {("deploy", "training")}
# the run store (run/ less loaded.py) builds no model and evaluates nothing: it imports nothing right
# of data but itself, so anything may store a run without importing models/ or evaluation/
STORE = {"run.store", "run.files", "run.layout", "run.checkpoints"}
MAX_FUNCTION_LINES = 100


def modules(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the package (packages by their __init__)."""
    out = {}
    for f in sorted(root.rglob("*.py")):
        parts = [package, *f.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module -> the package's modules it imports, at any depth of its code."""
    mods = modules(root, package)

    def known(name: str) -> str | None:  # the longest prefix of `name` that is a module of the package
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, f in mods.items():
        is_pkg = f.name == "__init__.py"
        deps: set[str] = set()
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's package, up level - 1 more
                    anchor = name.split(".") if is_pkg else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                if t == package or t.startswith(package + "."):
                    dep = known(t)
                    if dep and dep != name:
                        deps.add(dep)
        graph[name] = deps
    return graph


def layer_of(module: str, package: str) -> tuple[int, str]:
    top = module[len(package) + 1:].split(".")[0] if module != package else ""
    for i, names in enumerate(LAYERS):
        if top in names:
            return i, top
    raise AssertionError(f"{module}: its part '{top}' is in no layer; add it to LAYERS (and docs/architecture.md)")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def violations(graph: dict[str, set[str]], package: str) -> list[str]:
    problems = [f"import cycle: {' <-> '.join(c)}" for c in cycles(graph)]
    for mod, deps in sorted(graph.items()):
        here, top = layer_of(mod, package)
        for dep in sorted(deps):
            there, dep_top = layer_of(dep, package)
            if there > here:
                problems.append(f"{mod} imports {dep}: against the layers ({top or 'api'} is left of {dep_top})")
            if (top, dep_top) in FORBIDDEN:
                problems.append(f"{mod} imports {dep}: {top} never imports {dep_top}")
            if _sub(mod, package) in STORE and _sub(dep, package) not in STORE and there > LAYER_OF_DATA:
                problems.append(f"{mod} imports {dep}: the run store builds no model and evaluates nothing")
    return problems


LAYER_OF_DATA = next(i for i, names in enumerate(LAYERS) if "data" in names)


def _sub(module: str, package: str) -> str:
    """mmfit.run.store -> run.store"""
    return module[len(package) + 1:]


def test_the_package_keeps_its_layers():
    root = Path(mmfit.__file__).parent
    graph = import_graph(root, "mmfit")
    assert len(graph) > 40 and "mmfit.run.store" in graph["mmfit.training.loop"]  # the parser sees imports
    assert "mmfit.models.model" in graph["mmfit.run.loaded"]  # function-level imports count too
    assert violations(graph, "mmfit") == []


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def test_the_checker_finds_cycles_and_imports_against_the_layers(tmp_path):
    pkg = tmp_path / "pkg"
    _write(pkg, {
        "__init__.py": "",
        "config.py": "def f():\n    from pkg.cli import main\n",  # the bottom reaching the top
        "cli.py": "import pkg.config\n",
        "data/__init__.py": "",
        "data/a.py": "from pkg.data import b\n",
        "data/b.py": "def g():\n    from . import a\n",  # a cycle through a function-level relative import
        "training/__init__.py": "",
        "training/loop.py": "from pkg.config import f\n",
        "deploy/__init__.py": "",
        "deploy/serve.py": "from ..training.loop import f\n",  # deploy never imports training
        "evaluation/__init__.py": "",
        "evaluation/robust.py": "def h():\n    from pkg.training.loop import f\n",  # evaluation is below training
        "run/__init__.py": "",
        "run/store.py": "def k():\n    from pkg.evaluation.robust import h\n",  # the store evaluates nothing
        "run/loaded.py": "from pkg.evaluation.robust import h\nfrom pkg.run.store import k\n",  # loading may
    })
    graph = import_graph(pkg, "pkg")
    assert graph["pkg.data.b"] == {"pkg.data.a"} and graph["pkg.deploy.serve"] == {"pkg.training.loop"}
    found = violations(graph, "pkg")
    assert "import cycle: pkg.data.a <-> pkg.data.b" in found
    assert any(p.startswith("pkg.config imports pkg.cli: against the layers") for p in found)
    assert "pkg.deploy.serve imports pkg.training.loop: deploy never imports training" in found
    assert any(p.startswith("pkg.evaluation.robust imports pkg.training.loop: against the layers") for p in found)
    assert "pkg.run.store imports pkg.evaluation.robust: the run store builds no model and evaluates nothing" in found
    assert not any(p.startswith("pkg.run.loaded") for p in found)
    # and a clean package passes
    clean = tmp_path / "clean"
    _write(clean, {"__init__.py": "", "config.py": "", "cli.py": "import clean.config\n"})
    assert violations(import_graph(clean, "clean"), "clean") == []


def test_an_unknown_top_level_part_must_be_placed_in_a_layer(tmp_path):
    _write(tmp_path / "p", {"__init__.py": "", "misc.py": ""})
    with pytest.raises(AssertionError, match="in no layer"):
        violations(import_graph(tmp_path / "p", "p"), "p")


def test_no_function_is_longer_than_a_screenful_or_two():
    root = Path(mmfit.__file__).parent
    long = []
    for f in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{f.relative_to(root)}:{node.lineno} {node.name} ({n} lines)")
    assert long == []


def kind_comparisons(root: Path, skip: tuple[str, ...] = ("tasks.py",)) -> list[str]:
    """Where a module compares something with a task kind's name (`p.type == "regression"`,
    `kind in ("classification", "multilabel")`) instead of asking the kind's row in tasks.KINDS."""
    def names(node) -> set[str]:
        items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
        return {e.value for e in items if isinstance(e, ast.Constant) and e.value in KIND_NAMES}

    found = []
    for f in sorted(root.rglob("*.py")):
        if str(f.relative_to(root)) in skip:
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Compare) and any(names(x) for x in [node.left, *node.comparators]):
                found.append(f"{f.relative_to(root)}:{node.lineno}")
    return found


def test_task_kinds_are_declared_once():
    assert kind_comparisons(Path(mmfit.__file__).parent) == []


def test_the_kind_check_finds_a_comparison_with_a_kind_name(tmp_path):
    _write(tmp_path / "p", {
        "__init__.py": "",
        "a.py": 'def f(p, kind):\n    if p.type == "regression":\n        return 1\n'
                '    return kind not in ("matching", "generation")\n',
        "b.py": 'CFG = {"type": "matching"}\nKIND = "classification"\n',  # naming a kind is fine
        "tasks.py": 'def g(k):\n    return k == "multilabel"\n',  # the table's own module may
    })
    assert kind_comparisons(tmp_path / "p") == ["a.py:2", "a.py:4"]
