"""The layout keeps its promises: import directions between packages (the table in
docs/architecture.md), MLflow only inside `pipeline.tracking`, nothing heavy where a
command must answer fast, and the process-wide switches at the edge."""

from __future__ import annotations

import ast
import gc
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT

PIPELINE = PROJECT_ROOT / "pipeline"
HEAVY = {"tensorflow", "keras", "keras_tuner", "mlflow"}
SHARED = {"errors", "progress"}  # small modules every package may use
ENTRY_POINTS = {
    "pipeline.search.__main__",
    "pipeline.report",
    "pipeline.reproduce",
    "pipeline.server",
    "pipeline.ui_capture",
    "pipeline.bench.__main__",
    "pipeline.predict",
}
DESIGN = PROJECT_ROOT / "docs" / "architecture.md"
EDGE = "pipeline.runtime.cli"  # the command-line edge the entry points share


def design_table() -> dict[str, set[str]]:
    """package -> project packages it may import (besides SHARED and itself), read from
    the table in docs/architecture.md: the note and the code cannot drift apart."""
    text = DESIGN.read_text()
    section = text.split("## Packages and their import directions", 1)[1].split("\n## ", 1)[0]
    allowed = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            uses = cells[2]
            allowed[cells[0].strip("`")] = set() if uses == "–" else set(uses.split(", "))
    return allowed


ALLOWED = design_table()


def test_the_design_note_names_every_package():
    packages = {p.name for p in PIPELINE.iterdir() if (p / "__init__.py").exists()}
    assert set(ALLOWED) == packages - {"bench"}  # bench may import anything


def module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, top_level_only: bool = False) -> set[str]:
    """Absolute module names imported anywhere in the file (or only at module level)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


MODULES = {module_name(p): p for p in sorted(PIPELINE.rglob("*.py"))}


def package_of(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


@pytest.mark.parametrize(
    "module", [m for m in MODULES if package_of(m) in ALLOWED and m not in ENTRY_POINTS]
)
def test_packages_import_only_what_the_design_allows(module):
    own = package_of(module)
    used = {package_of(m) for m in imports(MODULES[module]) if m.startswith("pipeline.")}
    forbidden = used - ALLOWED[own] - SHARED - {own}
    assert not forbidden, f"{module} imports pipeline.{sorted(forbidden)}"


SERVING_MLFLOW = {"mlflow.pyfunc", "mlflow.models", "mlflow.types", "mlflow.exceptions",
                  "mlflow.protos.databricks_pb2"}  # fmt: skip


def test_mlflow_is_imported_only_inside_tracking_and_serving_through_pyfunc():
    outside = [
        m
        for m, path in MODULES.items()
        if package_of(m) not in ("tracking", "serving")
        and any(i.split(".")[0] == "mlflow" for i in imports(path))
    ]
    assert outside == []
    for module, path in MODULES.items():
        if package_of(module) == "serving":
            used = {i for i in imports(path) if i.split(".")[0] == "mlflow"}
            beyond = {i for i in used if not any(i.startswith(p) for p in SERVING_MLFLOW)}
            assert not beyond, f"{module} uses MLflow beyond pyfunc: {sorted(beyond)}"
            roots = {i.split(".")[0] for i in imports(path, top_level_only=True)}
            assert not roots & {"tensorflow", "keras"}, f"{module} imports TensorFlow at load"


@pytest.mark.parametrize(
    ("prefix", "heavy"),
    [
        ("pipeline.config", HEAVY),
        ("pipeline.data", HEAVY),
        ("pipeline.models.registry", HEAVY),
        ("pipeline.models.scores", HEAVY),
        ("pipeline.tracking.schema", HEAVY),
        ("pipeline.tracking.records", HEAVY),
        ("pipeline.reporting.search_report", {"tensorflow", "keras", "keras_tuner"}),
        ("pipeline.reporting.statistics", {"tensorflow", "keras", "keras_tuner"}),
        ("pipeline.search.ledger", {"tensorflow", "keras", "keras_tuner"}),
        ("pipeline.search.outcome", {"tensorflow", "keras", "keras_tuner"}),
    ],
)
def test_light_modules_never_import_heavy_libraries(prefix, heavy):
    for module, path in MODULES.items():
        if module.startswith(prefix):
            roots = {i.split(".")[0] for i in imports(path)}
            assert not roots & heavy, f"{module} imports {sorted(roots & heavy)}"


# The tracker's parts (pipeline/tracking/store.py composes them): they alone import MLflow.
TRACKER_PARTS = {f"pipeline.tracking.{m}" for m in ("connection", "runs", "readers", "artifacts")}


def test_tracking_and_entry_points_import_nothing_heavy_at_module_level():
    for module, path in MODULES.items():
        if package_of(module) == "tracking" or module in ENTRY_POINTS or module == EDGE:
            roots = {i.split(".")[0] for i in imports(path, top_level_only=True)}
            allowed = {"mlflow"} if module in TRACKER_PARTS else set()
            assert not roots & (HEAVY - allowed), f"{module}: {sorted(roots & HEAVY)}"


def test_nothing_imports_an_entry_point_and_the_library_never_imports_the_edge():
    for module, path in MODULES.items():
        used = imports(path)
        assert not used & ENTRY_POINTS, f"{module} imports an entry point"
        if package_of(module) in ALLOWED and module not in ENTRY_POINTS:
            assert not any(i.startswith(EDGE) for i in used), f"{module} imports the edge"


def test_gc_freeze_is_undone_when_the_block_ends():
    from pipeline.runtime.cli import frozen_heap

    session_frozen = gc.get_freeze_count() > 0  # tests/conftest.py freezes the imports
    gc.unfreeze()
    try:
        with frozen_heap():
            assert gc.get_freeze_count() > 0
        assert gc.get_freeze_count() == 0
        gc.freeze()  # frozen by the caller: left so
        frozen = gc.get_freeze_count()
        with frozen_heap():
            pass
        # Not unfrozen, not frozen again (a frozen object another thread frees leaves it)
        assert 0 < gc.get_freeze_count() <= frozen
    finally:
        if not session_frozen:
            gc.unfreeze()


def test_a_search_collects_once_after_its_imports_then_as_usual():
    """`python -m pipeline.search` turns the collector off through its imports;
    frozen_heap collects once, freezes, and turns it back on (also on a frozen heap)."""
    from pipeline.runtime.cli import collect_after_startup, frozen_heap

    session_frozen = gc.get_freeze_count() > 0  # tests/conftest.py freezes the imports
    try:
        collect_after_startup()
        assert not gc.isenabled()
        with frozen_heap():
            assert gc.isenabled()
        gc.disable()
        gc.freeze()  # a heap frozen by the caller (the test session, a zygote's child)
        with frozen_heap():
            assert gc.isenabled()
    finally:
        gc.enable()
        if not session_frozen:
            gc.unfreeze()


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected parts of more than one node (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            part = []
            while True:
                top = stack.pop()
                part.append(top)
                if top == node:
                    break
            if len(part) > 1:
                found.append(sorted(part))

    for node in list(graph):
        if node not in index:
            visit(node)
    return found


def imported_modules(path: Path) -> set[str]:
    """The project modules a file imports, anywhere in it: `from P import name` counts as
    an import of the module P.name when that is a module, else of P."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                inner = f"{node.module}.{alias.name}"
                found.add(inner if inner in MODULES else node.module)
    return found & set(MODULES)


def test_no_import_makes_a_circle_between_modules_or_packages():
    """Local imports count too: a circle closed inside a function is still a circle."""
    modules = {m: imported_modules(path) - {m} for m, path in MODULES.items()}
    assert _circles(modules) == []
    packages = {own: uses - {own} for own, uses in ALLOWED.items()}
    assert _circles(packages) == []
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


LONGEST_FILE, LONGEST_FUNCTION = 450, 80  # lines; tests and bench/ aside


def test_no_file_or_function_outgrows_what_one_reading_holds():
    too_long = []
    for module, path in MODULES.items():
        if package_of(module) == "bench":
            continue
        text = path.read_text()
        if text.count("\n") > LONGEST_FILE:
            too_long.append(f"{path.name}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > LONGEST_FUNCTION:
                    too_long.append(f"{module}.{node.name}: {length} lines")
    assert too_long == []
