"""The house rules (issue 27), held by walking the code: few top-level modules, subpackages that state their job,
imports that point one way only, pure modules free of mlflow, no module over 400 lines, test modules that import
no other test module."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "agnews"
# What may import what: a unit (a leaf module or a subpackage) imports units of a lower rank only (and itself).
RANK = {
    "errors": 0,
    "vocab": 1, "values": 1, "stats": 1,
    "hardware": 2,
    "runs": 3,
    "data": 4,
    "metrics": 5, "params": 5, "drawing": 5,
    "training": 6, "serving": 6, "decide": 6,
    "monitoring": 7, "orchestration": 7,
}
# Pure: no mlflow import anywhere in them (lazy ones included), so they run and test without a tracking store.
PURE = {
    "errors", "vocab", "values", "stats", "hardware", "metrics", "params", "drawing",
    "data.task", "data.ag_news", "data.reading", "data.sampling",
    "training.models", "training.fine_tune", "training.distill", "training.probe", "training.curves",
    "serving.costs", "serving.server",
    "decide.report", "decide.wording", "decide.training_notes", "decide.plots",
    "monitoring.checks", "monitoring.alarms", "monitoring.report", "monitoring.plots",
    "orchestration.search_space",
}
MAX_LINES = 400
MAX_TOP_LEVEL = 8


def _name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")


MODULES = {_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every `agnews.` module a file imports (at top or inside a function), as a dotted name under agnews."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                and node.module.split(".")[0] == "agnews"):
            base = node.module.removeprefix("agnews").removeprefix(".")
            found += [(node.lineno, f"{base}.{a.name}".strip(".")) for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name.removeprefix("agnews.")) for a in node.names if a.name.startswith("agnews.")]
    return found


def _unit(module: str) -> str:
    return module.split(".")[0]


def test_few_top_level_modules_beside_the_subpackages():
    top = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
    assert len(top) <= MAX_TOP_LEVEL, top
    units = set(top) | {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert units == set(RANK), f"give every unit a rank here: {sorted(units ^ set(RANK))}"


@pytest.mark.parametrize("package", sorted(p.parent for p in PACKAGE.rglob("__init__.py")), ids=lambda p: p.name)
def test_every_package_states_its_job(package):
    doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text(encoding="utf-8")))
    assert doc and len(doc.split()) >= 8, f"{package}/__init__.py: say in its docstring what it is for"
    if package.parent == PACKAGE and package.name != "backends":
        assert "May import" in doc, f"{package}/__init__.py: say what it may import"


def test_imports_point_one_way():
    wrong = []
    for module, path in MODULES.items():
        here = _unit(module)
        for line, target in _imports(path):
            there = _unit(target)
            if there != here and RANK[there] >= RANK[here]:
                wrong.append(f"agnews/{path.relative_to(PACKAGE)}:{line}: {here} (rank {RANK[here]}) imports "
                             f"agnews.{target} (rank {RANK[there]})")
    assert not wrong, "\n".join(wrong)


def test_an_import_of_a_higher_unit_is_caught(tmp_path):
    """The rule itself: a module import is read as its unit (`from agnews.training import fine_tune` is training),
    so a rank-3 unit importing a rank-6 one is reported and the walk above can fail."""
    source = tmp_path / "lower.py"
    source.write_text("from agnews.training import fine_tune\n\n\n"
                      "def f():\n    from agnews.serving.costs import cost\n")
    imports = _imports(source)
    assert imports == [(1, "training.fine_tune"), (5, "serving.costs.cost")]
    assert all(RANK[_unit(target)] > RANK["runs"] for _, target in imports)


@pytest.mark.parametrize("module", sorted(PURE))
def test_pure_modules_import_no_mlflow(module):
    path = MODULES[module]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        assert not any(n.split(".")[0] == "mlflow" for n in names), f"{path}:{node.lineno} imports mlflow"


def test_no_module_over_the_size_limit():
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"split these (over {MAX_LINES} lines): {long}"


def test_no_test_module_imports_another():
    tests = REPO / "tests"
    names = {p.stem for p in tests.rglob("*.py")} - {"helpers", "__init__"}
    wrong = []
    for path in sorted(tests.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            wrong += [f"{path.relative_to(REPO)}:{node.lineno}: {m}" for m in modules
                      if m.split(".")[-1] in names or m.split(".")[-1] == "conftest"]
    assert not wrong, "shared builders go in tests/helpers.py:\n" + "\n".join(wrong)
