"""The floors of the package (its docstring): a floor answers to the floors below it.

An AST pass over every module of ``src/napari_nacsim``, imports inside functions and
``TYPE_CHECKING`` blocks included (that is where upward imports hide: the top of a file
then does not show what it depends on). It fails on

- an import from a lower floor into a higher one (``science`` importing ``families``), or
  between the two faces (``cli`` and ``plugin`` stand side by side, neither uses the other);
- a circle of imports between packages: inside a floor the sub-packages are layered too
  (``science.preprocess`` below ``science.phantoms`` below ``science.generative``), so no
  two of them may import each other, directly or round about.

Each failure names the file and line of the import. Nothing is imported here: the check
reads the source, well under a second.
"""

from __future__ import annotations

import ast
from pathlib import Path

import napari_nacsim

PACKAGE = Path(napari_nacsim.__file__).resolve().parent
ROOT = PACKAGE.name

# Low to high, as the package docstring lists them: a package may import its own floor's
# package and any lower floor, nothing else. The root module (docstring, version) is below
# them all.
FLOORS: dict[str, int] = {"core": 1, "science": 2, "families": 3, "datasets": 4,
                          "engine": 5, "cli": 6, "plugin": 6}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p) for p in PACKAGE.rglob("*.py")}
PACKAGES = {module_name(p) for p in PACKAGE.rglob("__init__.py")}


def imports_in(text: str, module: str, is_package: bool) -> list[tuple[str, int]]:
    """``(imported module, line)`` for each import of the package in the source ``text`` of
    ``module``, relative ones resolved (in ``napari_nacsim.science.phantoms.base``,
    ``from ...families import x`` is ``napari_nacsim.families``; ``from . import sub`` is
    ``napari_nacsim.science.phantoms.sub``)."""
    here = module.split(".")
    package = here if is_package else here[:-1]
    found = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if node.module is None:  # ``from . import a, b``: a name may be a module
                found += [(f"{target}.{alias.name}" if f"{target}.{alias.name}" in MODULES
                           else target, node.lineno) for alias in node.names]
            else:
                found.append((target, node.lineno))
    return [(name, line) for name, line in found
            if name == ROOT or name.startswith(ROOT + ".")]


def imports_of(path: Path) -> list[tuple[str, int]]:
    return imports_in(path.read_text(encoding="utf-8"), module_name(path),
                      path.name == "__init__.py")


def edges() -> list[tuple[str, str, str]]:
    """(importing module, imported module, "file:line") for every import of the package."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        shown = path.relative_to(PACKAGE.parent.parent)
        out += [(module_name(path), target, f"{shown}:{line}")
                for target, line in imports_of(path)]
    return out


def floor_of(module: str) -> tuple[str, int] | None:
    """(top-level package, floor) of a module of the package; None for the root module."""
    parts = module.split(".")
    if len(parts) < 2:
        return None
    assert parts[1] in FLOORS, f"{module}: package {parts[1]!r} is on no floor (add it to " \
                               "FLOORS and to the package docstring)"
    return parts[1], FLOORS[parts[1]]


def wrong_way(found) -> list[str]:
    """Imports into a higher floor, or from one face into the other."""
    bad = []
    for source, target, at in found:
        low, high = floor_of(source), floor_of(target)
        if low is None or high is None or low[0] == high[0]:
            continue
        if high[1] >= low[1]:
            bad.append(f"{at}: {low[0]} (floor {low[1]}) imports {target} "
                       f"(floor {high[1]})")
    return bad


def _owner(module: str) -> str:
    """The innermost package holding ``module`` (a package holds itself)."""
    while module not in PACKAGES:
        module = module.rsplit(".", 1)[0]
    return module


def package_graph(found) -> dict[tuple[str, str], str]:
    """Package -> package imports (the first "file:line" of each). Imports between a
    package and one it holds are left out: an ``__init__`` re-exporting its sub-packages,
    or a module using its parent's ``__init__``, is one unit looking at itself."""
    graph: dict[tuple[str, str], str] = {}
    for source, target, at in found:
        a, b = _owner(source), _owner(target)
        if a == b or a.startswith(b + ".") or b.startswith(a + "."):
            continue
        graph.setdefault((a, b), at)
    return graph


def circles(graph: dict[tuple[str, str], str]) -> list[list[str]]:
    """Groups of two or more packages that reach each other (Tarjan's strongly connected
    components), each sorted."""
    nodes = sorted({n for edge in graph for n in edge})
    successors = {n: sorted(b for (a, b) in graph if a == n) for n in nodes}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups = []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in successors[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = stack[stack.index(node):]
            del stack[stack.index(node):]
            if len(group) > 1:
                groups.append(sorted(group))

    for node in nodes:
        if node not in index:
            visit(node)
    return groups


def describe(group: list[str], graph: dict[tuple[str, str], str]) -> str:
    return "; ".join(f"{a} -> {b} ({at})" for (a, b), at in sorted(graph.items())
                     if a in group and b in group)


# --- this package ------------------------------------------------------------------------

def test_no_floor_imports_a_higher_floor_or_the_other_face():
    found = edges()
    assert len(found) > 200  # the pass sees the package's imports
    assert wrong_way(found) == []


def test_no_import_circle_between_packages():
    graph = package_graph(edges())
    assert ("napari_nacsim.engine", "napari_nacsim.families") in graph  # it sees packages
    assert [describe(group, graph) for group in circles(graph)] == []


def test_the_package_docstring_lists_the_floors_as_they_are():
    on_disk = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert on_disk == set(FLOORS)
    listed = [line.split()[0] for line in napari_nacsim.__doc__.splitlines()
              if line.startswith("    ") and line.split()[0] in FLOORS]
    assert sorted(listed) == sorted(FLOORS)                 # each once
    assert [FLOORS[n] for n in listed] == sorted(FLOORS[n] for n in listed)  # low to high


# --- the check itself, on made-up sources ---------------------------------------------------

def test_the_pass_sees_lazy_relative_and_type_checking_imports():
    source = ("from typing import TYPE_CHECKING\n"
              "from . import shapes\n"
              "if TYPE_CHECKING:\n    from ...families import get_family\n"
              "def f():\n    from ...engine.session import WhatIfSession\n"
              "    import napari_nacsim.cli.main, numpy\n")
    module = "napari_nacsim.science.phantoms.base"
    found = imports_in(source, module, is_package=False)
    assert found == [("napari_nacsim.science.phantoms.shapes", 2),
                     ("napari_nacsim.families", 4), ("napari_nacsim.engine.session", 6),
                     ("napari_nacsim.cli.main", 7)]
    bad = wrong_way([(module, target, f"base.py:{line}") for target, line in found])
    assert [b.split(":")[1] for b in bad] == ["4", "6", "7"]
    assert "science (floor 2) imports napari_nacsim.families (floor 3)" in bad[0]
    # a face into the other face, and a package's __init__ importing from itself
    assert wrong_way([("napari_nacsim.cli.main", "napari_nacsim.plugin.layers", "m.py:1")])
    assert imports_in("from .base import X\n", "napari_nacsim.families", True) == \
        [("napari_nacsim.families.base", 1)]
    assert not wrong_way([("napari_nacsim.engine.session", "napari_nacsim.core.scan", "s:1")])


def test_circles_are_found_and_named():
    graph = {("p.a", "p.b"): "a.py:3", ("p.b", "p.c"): "b.py:4", ("p.c", "p.a"): "c.py:5",
             ("p.c", "p.d"): "c.py:6", ("p.d", "p.e"): "d.py:1"}
    assert circles(graph) == [["p.a", "p.b", "p.c"]]
    assert describe(["p.a", "p.b", "p.c"], graph) == \
        "p.a -> p.b (a.py:3); p.b -> p.c (b.py:4); p.c -> p.a (c.py:5)"
    assert circles({("p.a", "p.b"): "a.py:1"}) == []
