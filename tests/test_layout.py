"""The package's layout as docs/layout.md draws it: no import circle, each module only importing the stages
before it; no web framework, CLI toolkit or plotting library imported at module level outside the modules
that own them; and the modules a torch-free install runs never import torch at module level.

The graph is read from the source (ast), not by importing it: every `import` and `from ... import`,
at module level and inside functions, so a circle hidden by an in-function import still counts.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "digitrec"
OWNERS = {  # third-party package -> the modules that may import it at module level
    "fastapi": "digitrec.web",
    "starlette": "digitrec.web",
    "uvicorn": "digitrec.web",
    "fastapi_offline": "digitrec.web",
    "click": "digitrec.cli",
    "matplotlib": "digitrec.report",
    "ray": "digitrec.scale",
    "pyarrow": "digitrec.scale",  # the scale extra's; scale imports them only when used
}
TORCH_FREE = [
    "digitrec.recognizer",
    "digitrec.reading",
    "digitrec.explain",
    "digitrec.runtime",
    "digitrec.rows",
    "digitrec.scale",
    "digitrec.cli",
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imported(node: ast.AST) -> list[str]:
    """The modules an import statement names (for `from a import b`: a.b when that is a module, else a)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return [
            f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in MODULES else node.module
            for alias in node.names
        ]
    return []


def imports_of(name: str, module_level_only: bool = False) -> set[str]:
    """What module `name` imports; importing a.b.c also runs the packages a.b and a (except a package the
    importer lies in, which is already being imported)."""
    tree = ast.parse(MODULES[name].read_text())
    nodes = tree.body if module_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        for target in imported(node):
            parts = target.split(".")
            for end in range(len(parts), 0, -1):
                parent = ".".join(parts[:end])
                if end < len(parts) and (name == parent or name.startswith(parent + ".")):
                    break
                found.add(parent)
    return found - {name}


def graph(module_level_only: bool = False) -> dict[str, set[str]]:
    return {name: {target for target in imports_of(name, module_level_only) if target in MODULES} for name in MODULES}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def layers(edges: dict[str, set[str]]) -> dict[str, int]:
    """Each module's floor: 0 for one that imports no other module of the package, else one above the
    highest floor it imports."""
    floors: dict[str, int] = {}

    def floor(node: str) -> int:
        if node not in floors:
            floors[node] = 1 + max((floor(target) for target in edges[node]), default=-1)
        return floors[node]

    for node in edges:
        floor(node)
    return floors


def outside_web(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph without the web package (its own circle is the web part's to break)."""

    def web(name: str) -> bool:
        return name == "digitrec.web" or name.startswith("digitrec.web.")

    return {name: {target for target in targets if not web(target)} for name, targets in edges.items() if not web(name)}


def test_the_library_and_the_cli_have_no_import_circle_even_through_imports_inside_functions():
    assert circles(outside_web(graph())) == []


def test_the_web_package_has_no_import_circle():
    assert circles(graph()) == []


def test_the_task_registry_is_the_only_place_that_knows_every_task():
    """A third task is one new module under tasks/ and one line in the registry: nothing outside tasks/
    names a task's own module."""
    users = {
        name
        for name, targets in graph().items()
        if not name.startswith("digitrec.tasks") and targets & {"digitrec.tasks.digits", "digitrec.tasks.numbers"}
    }
    assert users == set()


@pytest.mark.parametrize("package", sorted(OWNERS))
def test_web_cli_and_plotting_libraries_are_imported_at_module_level_only_by_their_owners(package):
    owner = OWNERS[package]
    importers = {name for name in MODULES if package in {target.split(".")[0] for target in imports_of(name, True)}}
    assert {name for name in importers if not (name == owner or name.startswith(owner + "."))} == set()


@pytest.mark.parametrize("start", TORCH_FREE)
def test_what_a_torch_free_install_runs_never_imports_torch_at_module_level(start):
    edges, seen, todo = graph(module_level_only=True), set(), [start]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(edges[name])
    assert {name for name in seen if "torch" in {target.split(".")[0] for target in imports_of(name, True)}} == set()


def test_the_floors_are_those_docs_layout_md_lists():
    """docs/layout.md lists the modules floor by floor; this keeps the list true."""
    floors = layers(graph())
    documented = (PACKAGE.parents[1] / "docs" / "layout.md").read_text()
    for name, number in floors.items():
        assert f"| {number} |" in documented and f"`{name.removeprefix('digitrec.')}`" in documented, name
    listed = {}
    for line in documented.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0].isdigit():
            for entry in cells[1].split(","):
                listed[entry.strip().strip("`")] = int(cells[0])
    assert listed == {name.removeprefix("digitrec."): number for name, number in floors.items()}
