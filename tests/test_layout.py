"""The layout docs/architecture.md describes: layers without import cycles, rules that stay in their modules.

Walked with `ast`, without importing anything: every import counts, those
inside functions and under TYPE_CHECKING included.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("runtime", "exporter", "trainer", "benchmarks")


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the project's packages (a package is its __init__)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The project's modules `path` imports: `from a.b import c` is a.b.c where that is a module, else a.b."""
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets.update(f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module
                           for alias in node.names)
    return {name for name in targets if name in known}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module, or a module importing itself (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_cycle_finder_finds_a_cycle_through_type_checking_imports(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "a.py").write_text("from pkg.b import x\n")
    (package / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import y\n")
    known = {"pkg.a": package / "a.py", "pkg.b": package / "b.py"}
    graph = {name: imports(path, known) for name, path in known.items()}
    assert cycles(graph) == [["pkg.a", "pkg.b"]]


def test_the_project_has_no_import_cycle():
    known = modules()
    graph = {name: imports(path, known) for name, path in known.items()}
    assert cycles(graph) == []


def test_no_code_outside_the_rules_asks_which_rule_a_bundle_has():
    """Section methods answer it (graph_roles, operating_points, full_path, block_walk): one rule, one module."""
    asking = re.compile(r"\brule\s*==|\.rule\s*!=|hasattr\(\s*[\w.]*dispatch|getattr\(\s*[\w.]*dispatch|\bhasattr\(\s*d\b")
    offenders = []
    for package in (*PACKAGES, "scripts", "android_demo/golden"):
        for path in (ROOT / package).rglob("*.py"):
            if path.is_relative_to(ROOT / "runtime" / "rules"):
                continue
            offenders += [f"{path.relative_to(ROOT)}:{n}" for n, line in enumerate(path.read_text().splitlines(), 1)
                          if asking.search(line)]
    assert offenders == []


def test_benchmarks_run_as_modules_and_shadow_no_package():
    scripts = {path.stem for path in (ROOT / "benchmarks").glob("*.py")}
    assert not scripts & {*PACKAGES, "tests", "scripts"}
    patched = [path.name for path in (ROOT / "benchmarks").glob("*.py") if "sys.path" in path.read_text()]
    assert patched == []


def test_runtime_keeps_its_top_level_small():
    top = sorted(path.name for path in (ROOT / "runtime").glob("*.py"))
    assert len(top) <= 8, top


def test_the_architecture_doc_lists_every_module_and_no_other():
    """docs/architecture.md's layout block names every module of runtime/, exporter/ and trainer/, file for file."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = text.split("<!-- layout -->")[1].split("<!-- /layout -->")[0]
    listed, folder = set(), []
    for line in block.splitlines():
        code = line.split("#")[0].rstrip()
        names = code.split()
        if not names:
            continue
        depth = (len(code) - len(code.lstrip())) // 2
        if names[0].endswith("/"):
            folder[depth:] = [names[0].rstrip("/")]
            depth, names = depth + 1, names[1:]
        listed.update("/".join([*folder[:depth], name]) for name in names if name.endswith(".py"))
    actual = {str(p.relative_to(ROOT)) for package in ("runtime", "exporter", "trainer")
              for p in (ROOT / package).rglob("*.py")}
    assert sorted(actual - listed) == [] and sorted(listed - actual) == []
