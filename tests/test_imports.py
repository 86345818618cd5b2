"""The package's import graph: every module imports on its own, and the entry points form no cycle.

`train.py` dispatches to `cv.py` and `backtest.py`, which run `run.train` once per fold or origin: a
cycle between them (cv importing train, train importing cv) worked only in the order it happened
to be imported in, and made each of them impossible to read without the others.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import dltemplate

PACKAGE = dltemplate.__name__
SOURCE = Path(dltemplate.__file__).parent
# train dispatches to cv and backtest (extras: a project may have deleted them); each of them uses run
ENTRY_POINTS = tuple(
    name
    for name in ("train", "extras.cv", "extras.backtest", "run")
    if (SOURCE / f"{name.replace('.', '/')}.py").is_file()
)
HAS_CV = "extras.cv" in ENTRY_POINTS


def package_modules() -> dict[str, Path]:
    """Module name → file, for every module of the package."""
    modules = {}
    for path in sorted(SOURCE.rglob("*.py")):
        parts = [PACKAGE, *path.relative_to(SOURCE).with_suffix("").parts]
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imports(name: str, path: Path, modules: dict[str, Path], top_level: bool) -> set[str]:
    """The package modules that module `name` imports: at module level only (`top_level`: what runs when it
    is imported), or anywhere in it (inside functions too)."""
    tree = ast.parse(path.read_text(), str(path))
    nodes = ast.iter_child_nodes(tree) if top_level else ast.walk(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in nodes:
        if isinstance(node, ast.If) and top_level:  # `if TYPE_CHECKING:` imports run only for type checkers
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: `from . import x` in package a.b is a.b.x; `from ..c import x`, a.c.x
                anchor = package.rsplit(".", node.level - 1)[0]
                base = f"{anchor}.{base}" if base else anchor
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `from a.b import c`: module a.b.c, else a.b
                target = target.rpartition(".")[0]
            if target and target != name and target != PACKAGE:
                found.add(target)
    return found


def graph(top_level: bool) -> dict[str, set[str]]:
    modules = package_modules()
    return {name: imports(name, path, modules, top_level) for name, path in modules.items()}


def reachable(edges: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for target in edges.get(todo.pop(), ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def cycles_through(edges: dict[str, set[str]], names: list[str]) -> list[str]:
    """Each of `names` that imports, through any chain, itself."""
    return [name for name in names if name in reachable(edges, name)]


def test_the_graph_sees_the_package_s_imports():  # the checks below are only as good as the graph
    edges = graph(top_level=True)
    assert f"{PACKAGE}.build" in edges[f"{PACKAGE}.run"]
    assert not HAS_CV or f"{PACKAGE}.run" in edges[f"{PACKAGE}.extras.cv"]
    assert f"{PACKAGE}.run" in edges[f"{PACKAGE}.train"] and f"{PACKAGE}.selection" in edges[f"{PACKAGE}.train"]
    # train reaches cv and backtest by name (`train._extra`, importlib) when a run asks for them: no edge
    assert f"{PACKAGE}.extras.cv" not in graph(top_level=False)[f"{PACKAGE}.train"]


def test_train_cv_and_backtest_form_no_import_cycle():
    names = [f"{PACKAGE}.{name}" for name in ENTRY_POINTS]
    assert cycles_through(graph(top_level=True), names) == []
    # not even through an import inside a function: cv, backtest and run never import train
    every = graph(top_level=False)
    for name in names[1:]:
        assert f"{PACKAGE}.train" not in reachable(every, name), f"{name} imports {PACKAGE}.train"
    assert not {f"{PACKAGE}.extras.cv", f"{PACKAGE}.extras.backtest"} & reachable(every, f"{PACKAGE}.run")


@pytest.mark.slow  # a fresh interpreter
def test_every_module_imports_first_in_a_fresh_interpreter():
    """Each module imported as the first of the package (the package's modules forgotten between them): an
    import cycle that works only in one order fails here."""
    script = f"""
import importlib, sys
names = {sorted(package_modules())!r}
for name in names:
    for loaded in [m for m in sys.modules if m == {PACKAGE!r} or m.startswith({PACKAGE + "."!r})]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as error:
        print(f"{{name}}: {{type(error).__name__}}: {{error}}")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == ""
