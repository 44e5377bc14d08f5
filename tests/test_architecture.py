"""The packages form floors: app → training → generation → annotation_db, never upward.

Every import counts, including the ones deferred into functions: a deferred import
still couples the modules, it only hides the coupling from a reader.
"""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLOORS = {"annotation_db": 0, "generation": 1, "training": 2, "app": 3}


def _module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, module: str) -> set[str]:
    """The project modules ``path`` imports (absolute and relative, anywhere in the file)."""
    package = module.split(".")[:-1] if path.name != "__init__.py" else module.split(".")
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            # ``from pkg import mod`` imports the submodule pkg.mod when there is one
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(n for n in names if n.split(".")[0] in FLOORS)
    return found


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for floor in FLOORS for p in (ROOT / floor).rglob("*.py")
             if "migrations" not in p.parts}
    graph = {}
    for module, path in files.items():
        graph[module] = {name for name in _imports(path, module) if name in files
                         and name != module}
    return graph


def test_no_module_imports_a_package_above_its_own():
    upward = sorted((module, target) for module, targets in import_graph().items()
                    for target in targets
                    if FLOORS[target.split(".")[0]] > FLOORS[module.split(".")[0]])
    assert upward == []


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    state: dict[str, int] = {}  # 1 on the current path, 2 finished
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_the_walk_sees_deferred_and_relative_imports(tmp_path):
    """The checker itself: an import inside a function and a relative import are found."""
    pkg = tmp_path / "generation"
    pkg.mkdir()
    source = pkg / "mod.py"
    source.write_text("def f():\n    from training import grid\n\nfrom . import other\n")
    found = _imports(source, _module_name(source, tmp_path))
    assert {"training", "training.grid", "generation", "generation.other"} <= found


def test_no_function_runs_over_80_lines():
    """Functions fit on a screen, on every floor: screens and commands stay thin (layout,
    wiring and calls into the domain), and a step's long job is split along its
    sections into functions whose names say what each does."""
    long = []
    for path in (p for floor in FLOORS for p in (ROOT / floor).rglob("*.py")
                 if "migrations" not in p.parts):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > 80:
                    long.append(f"{path.relative_to(ROOT)}:{node.name} ({lines} lines)")
    assert long == []


def test_the_architecture_docs_module_table_is_the_modules_own_docstrings():
    """docs/architecture.md's module table is generated; a module added, moved or
    re-described without regenerating it fails here (fix: python docs/architecture_table.py)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("architecture_table",
                                                  ROOT / "docs" / "architecture_table.py")
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    text = table.DOC.read_text()
    assert table.rendered(text) == text, "stale: run python docs/architecture_table.py"
    # the check itself notices a change: a module without its row is stale
    assert table.rendered(text.replace("| `render.py` |", "| `rendering.py` |")) != \
        text.replace("| `render.py` |", "| `rendering.py` |")


def test_one_patients_path_names_existing_files_each_once():
    """The doc's patient path (cohort → AUROC) stays followable: every file it names
    exists and none is opened twice."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    path = text.split("<!-- patient path -->", 1)[1].split("<!-- end of patient path -->")[0]
    files = re.findall(r"^\d+\. `([^`]+)`", path, flags=re.M)
    assert len(files) == int(re.findall(r"^(\d+)\. ", path, flags=re.M)[-1])
    assert len(files) < 42  # the count before the house step
    assert [f for f in files if not (ROOT / f).is_file()] == []
    assert len(set(files)) == len(files)
