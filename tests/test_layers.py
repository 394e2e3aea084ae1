"""The package's house: wings whose imports run one way, no circles, the measuring tools apart.

Read from the code itself: every import, the lazy ones inside functions and those made only
for type checking included. A new import against the order fails here, naming its file and
line.
"""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import ROOT

PACKAGE = ROOT / "src" / "tensorguess"
# Top to bottom: a module may import its own wing and the wings below it, never one above.
# Wings on one line are siblings that do not import one another.
LAYERS = [
    ["cli"],
    ["serve", "export", "bench", "review"],
    ["training"],
    ["quality"],
    ["classify"],
    ["features"],
    ["data"],
    ["extras", "files", "model_files", "progress", "quiet", "web"],
    ["errors", "__init__"],
]
ENTRY_POINT = "tensorguess.__main__"
# The measuring tools are a command: only its face imports them.
BENCH_IMPORTERS = {"tensorguess.cli.bench"}
MOST_TOP_LEVEL_MODULES = 10

Graph = dict[str, list[tuple[str, int]]]


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, package: Path = PACKAGE) -> list[tuple[str, int]]:
    """(module of the package, line) for every import in `path`, wherever it stands."""
    name = module_name(path, package)
    here = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                parts = here.split(".")
                module = ".".join(parts[: len(parts) - node.level + 1] + [module] * bool(module))
            for alias in node.names:  # `from tensorguess.x import y`: y may be a module
                candidate = f"{module}.{alias.name}"
                found.append((candidate if _is_module(candidate, package) else module, node.lineno))
    return [(module, line) for module, line in found if module.split(".")[0] == package.name]


def _is_module(name: str, package: Path) -> bool:
    path = package.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def import_graph(package: Path = PACKAGE) -> Graph:
    return {
        module_name(path, package): imported_modules(path, package)
        for path in sorted(package.rglob("*.py"))
        if "__pycache__" not in path.parts
    }


def wing(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer(module: str) -> int | None:
    return next((i for i, wings in enumerate(LAYERS) if wing(module) in wings), None)


def against_the_flow(graph: Graph) -> list[str]:
    """Each import of a wing from a wing above it or beside it."""
    wrong = []
    for module, imports in graph.items():
        for target, line in imports:
            if module == ENTRY_POINT or wing(module) == wing(target):
                continue
            if layer(target) <= layer(module):
                wrong.append(f"{module} (line {line}) imports {target}")
    return wrong


def circles(graph: Graph) -> list[str]:
    """Each cycle of imports found by a depth-first walk. A package's __init__ importing its
    own modules is how Python loads it, not a cycle."""
    edges = {
        module: sorted(
            {target for target, _ in imports if target != module}
            - {target for target, _ in imports if target.startswith(module + ".")}
        )
        for module, imports in graph.items()
    }
    state: dict[str, str] = {}
    found = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in edges.get(module, ()):
            if state.get(target) == "open":
                found.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    return found


def test_every_module_lives_in_a_wing():
    homeless = [m for m in import_graph() if layer(m) is None and m != ENTRY_POINT]
    assert homeless == []


def test_imports_run_one_way_down_the_wings():
    assert against_the_flow(import_graph()) == []


def test_no_circle_among_the_modules():
    assert circles(import_graph()) == []


def test_no_runtime_module_imports_the_measuring_tools():
    importers = {
        module
        for module, imports in import_graph().items()
        if wing(module) != "bench" and any(wing(target) == "bench" for target, _ in imports)
    }
    assert importers <= BENCH_IMPORTERS


def test_few_modules_stand_directly_in_the_package():
    top = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert len(top) <= MOST_TOP_LEVEL_MODULES, top


def test_the_checks_see_a_lazy_import_against_the_flow_and_a_circle(tmp_path):
    package = tmp_path / "tensorguess"
    for folder in ("data", "training"):
        (package / folder).mkdir(parents=True)
        (package / folder / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "data" / "dataset.py").write_text(
        "def split():\n    from tensorguess.training.options import TrainingOptions\n"
    )
    (package / "training" / "options.py").write_text(
        "from tensorguess.data import dataset\n"
    )
    graph = import_graph(package)
    assert against_the_flow(graph) == [
        "tensorguess.data.dataset (line 2) imports tensorguess.training.options"
    ]
    assert circles(graph) == [
        "tensorguess.data.dataset -> tensorguess.training.options -> tensorguess.data.dataset"
    ]
