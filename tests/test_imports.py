"""The layering, read from the source (no module is imported): the library never imports the command line, no two
modules of the package import each other in a circle, and the product imports nothing from the lab
(``hybrid_zoo.benchmarks``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / 'hybrid_zoo'
# the product: the core (models, layers and the helpers every tier shares) and the tiers a user installs
PRODUCT = (
    'models',
    'layers',
    'train',
    'hub',
    'deploy',
    '__init__',
    'atomic',
    'factory',
    'flops',
    'describe',
    'labels',
    'run_files',
    'normalization',
)


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix('').parts)
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def package_modules(package: Path = PACKAGE) -> dict[str, Path]:
    """Every module of ``package``: dotted name -> file."""
    return {module_name(path, package.parent): path for path in sorted(package.rglob('*.py'))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == 'TYPE_CHECKING') or (
        isinstance(test, ast.Attribute) and test.attr == 'TYPE_CHECKING'
    )


def _imports(body: list[ast.stmt], lazy: bool, type_only: bool):
    """The import statements of ``body``: those that run when the module is imported (top level, and inside
    top-level ``if`` / ``try`` blocks), plus, with ``lazy``, those inside functions and classes, and, with
    ``type_only``, those under ``if TYPE_CHECKING``."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            if type_only or not _is_type_checking(node.test):
                yield from _imports(node.body, lazy, type_only)
            yield from _imports(node.orelse, lazy, type_only)
        elif isinstance(node, (ast.Try, ast.With)):
            handlers = [h.body for h in getattr(node, 'handlers', ())]
            for block in (node.body, getattr(node, 'orelse', []), getattr(node, 'finalbody', []), *handlers):
                yield from _imports(block, lazy, type_only)
        elif lazy and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.For, ast.While)):
            yield from _imports(node.body, lazy, type_only)
            yield from _imports(getattr(node, 'orelse', []), lazy, type_only)


def imported_names(name: str, path: Path, lazy: bool = False, type_only: bool = False) -> set[str]:
    """Dotted names ``name`` (the module in ``path``) imports (see :func:`_imports` for which statements count):
    ``import a.b`` gives ``a.b``; ``from a import b`` gives ``a`` and ``a.b`` (``b`` may be a submodule or an
    attribute of ``a``); relative imports are resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == '__init__.py' else name.rpartition('.')[0]
    found = set()
    for node in _imports(tree.body, lazy, type_only):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        else:
            if node.level:
                base = package.split('.')[: len(package.split('.')) - node.level + 1]
                source = '.'.join(base + ([node.module] if node.module else []))
            else:
                source = node.module
            found.add(source)
            found.update(f'{source}.{alias.name}' for alias in node.names)
    return found


def import_graph(package: Path = PACKAGE, lazy: bool = False) -> dict[str, set[str]]:
    """Import edges between the modules of ``package`` (each module -> the modules it imports): module-level
    imports, and with ``lazy`` those inside functions too; never the type-only ones."""
    modules = package_modules(package)
    return {
        name: {m for m in imported_names(name, path, lazy=lazy) if m in modules and m != name}
        for name, path in modules.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of ``graph``: each strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_library_module_imports_the_command_line():
    offenders = {
        name: sorted(
            m for m in imported_names(name, path, lazy=True, type_only=True) if m.split('.')[0] == 'hybrid_zoo_cli'
        )
        for name, path in package_modules().items()
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_torch_free_configuration_imports_neither_the_library_nor_the_command_line():
    for name, path in package_modules(ROOT / 'hybrid_zoo_config').items():
        roots = {m.split('.')[0] for m in imported_names(name, path, lazy=True, type_only=True)}
        assert not roots & {'hybrid_zoo', 'hybrid_zoo_cli', 'torch', 'timm'}, name


def test_no_import_circle_in_the_package():
    assert cycles(import_graph()) == []


def test_no_import_circle_even_through_imports_inside_functions():
    # a lazy import only hides a circle from Python: the two modules still cannot be read or moved one at a time
    assert cycles(import_graph(lazy=True)) == []


def test_the_product_imports_nothing_from_the_benchmarks():
    offenders = {}
    for name, path in package_modules().items():
        part = name.split('.')[1] if '.' in name else '__init__'
        if part in PRODUCT:
            lab = sorted(
                m
                for m in imported_names(name, path, lazy=True, type_only=True)
                if m.startswith('hybrid_zoo.benchmarks')
            )
            if lab:
                offenders[name] = lab
    assert offenders == {}


def test_deployment_builds_without_the_trainer_or_the_lab():
    for name, path in package_modules().items():
        if name.startswith('hybrid_zoo.deploy'):
            bad = [
                m
                for m in imported_names(name, path, lazy=True, type_only=True)
                if m.startswith(('hybrid_zoo.train', 'hybrid_zoo.benchmarks'))
            ]
            assert bad == [], name


# ---- the checks themselves: they find what they are meant to find ---------------------------------------------------


def _write_package(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / 'pkg' / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path / 'pkg'


def test_the_graph_sees_relative_absolute_and_from_package_imports_and_skips_lazy_ones(tmp_path):
    pkg = _write_package(
        tmp_path,
        {
            '__init__.py': '',
            'a.py': 'from . import b\n',
            'b.py': 'import pkg.sub.c\n',
            'sub/__init__.py': '',
            'sub/c.py': 'from ..a import thing\n',
            'd.py': 'def f():\n    import pkg.a\n',
            'e.py': 'from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.d\ntry:\n    from pkg import d\nexcept ImportError:\n    pass\n',
        },
    )
    graph = import_graph(pkg)
    assert graph['pkg.a'] == {'pkg', 'pkg.b'} and graph['pkg.b'] == {'pkg.sub.c'} and graph['pkg.sub.c'] == {'pkg.a'}
    assert graph['pkg.d'] == set() and graph['pkg.e'] == {'pkg', 'pkg.d'}
    assert cycles(graph) == [['pkg.a', 'pkg.b', 'pkg.sub.c']]
    lazy = import_graph(pkg, lazy=True)
    assert lazy['pkg.d'] == {'pkg.a'} and lazy['pkg.e'] == {'pkg', 'pkg.d'}  # TYPE_CHECKING imports stay out


@given(st.integers(2, 8), st.data())
def test_cycles_finds_exactly_the_circles_of_a_graph(n, data):
    """Against the definition: two modules are in one circle exactly when each reaches the other."""
    nodes = [f'm{i}' for i in range(n)]
    graph = {v: set(data.draw(st.lists(st.sampled_from(nodes), max_size=3))) - {v} for v in nodes}

    def reach(v: str) -> set[str]:
        seen, todo = set(), [v]
        while todo:
            for w in graph[todo.pop()]:
                if w not in seen:
                    seen.add(w)
                    todo.append(w)
        return seen

    reached = {v: reach(v) for v in nodes}
    expected = {frozenset({v} | {w for w in reached[v] if v in reached[w]}) for v in nodes if v in reached[v]}
    assert {frozenset(c) for c in cycles(graph)} == expected


@pytest.mark.parametrize('source', ['import hybrid_zoo_cli', 'from hybrid_zoo_cli.train import main'])
def test_the_command_line_check_sees_a_lazy_import(tmp_path, source):
    pkg = _write_package(tmp_path, {'__init__.py': '', 'x.py': f'def f():\n    {source}\n'})
    names = imported_names('pkg.x', pkg / 'x.py', lazy=True, type_only=True)
    assert any(m.split('.')[0] == 'hybrid_zoo_cli' for m in names)
