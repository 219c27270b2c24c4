"""The run-folder file names have one home, ``hybrid_zoo/run_files.py``: no other module of the package spells one.

The source of every module is scanned with ``ast`` (docstrings are prose and may name the files). A string that is a
run-file name, or a path-shaped string with one as a component (``'checkpoints/'``, ``f'{out}/model'``), is a second
spelling that drifts. The names that are also plain words (``model``, ``last``, ``best``: a dict key, a kind of
weights) count only where they are used as a path: beside a ``/`` operator, compared with a path's ``.name``, or
passed to ``Path``/``joinpath``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from hybrid_zoo import run_files

PACKAGE = Path(run_files.__file__).parent
NAMES = {value for key, value in vars(run_files).items() if key.isupper() and isinstance(value, str)}
WORDS = {run_files.MODEL_DIR, run_files.LAST, run_files.BEST}
_BESIDE_SLASH = re.compile(r'[\w.\-]+(?=/)|(?<=/)[\w.\-]+')


def _docstrings(tree: ast.AST) -> set[ast.AST]:
    scopes = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return {
        node.body[0].value
        for node in ast.walk(tree)
        if isinstance(node, scopes)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }


def _used_as_path(node: ast.Constant, parent: ast.AST | None) -> bool:
    if isinstance(parent, ast.BinOp) and isinstance(parent.op, ast.Div):
        return True
    if isinstance(parent, ast.Compare):
        return any(
            isinstance(n, ast.Attribute) and n.attr in ('name', 'stem') for n in (parent.left, *parent.comparators)
        )
    if isinstance(parent, ast.Call) and node in parent.args:
        func = parent.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, 'id', '')
        return name in ('Path', 'PurePath', 'joinpath')
    return False


def spellings(source: str, filename: str = '<source>') -> list[str]:
    """``line: text`` of each string in ``source`` (not a docstring) that spells a run-file name."""
    tree = ast.parse(source, filename=filename)
    docs = _docstrings(tree)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)) or node in docs:
            continue
        value, parent = node.value, parents.get(node)
        exact = value in NAMES and (value not in WORDS or _used_as_path(node, parent))
        if exact or NAMES & set(_BESIDE_SLASH.findall(value)):
            found.append(f'{node.lineno}: {value[:80]!r}')
    return found


def test_no_module_but_run_files_spells_a_run_file_name():
    found = {
        str(path.relative_to(PACKAGE.parent)): hits
        for path in sorted(PACKAGE.rglob('*.py'))
        if path != Path(run_files.__file__) and (hits := spellings(path.read_text(), str(path)))
    }
    assert not found, f'use the constants of hybrid_zoo.run_files instead of these literals: {found}'


@pytest.mark.parametrize(
    'source',
    [
        "p = out / 'metrics.jsonl'",
        "p = out / 'model' / 'config.json'",
        "p = root / 'checkpoints' / 'last'",
        "ok = path.name != 'best'",
        "p = Path(out).joinpath('model')",
        "name = 'manifest.json'",
        "MODEL_FILES = ('results.json', 'train_args.json')",
        "msg = f'expected {out}/model/config.json'",
        "bad = f.startswith('checkpoints/')",
        "p = f'{run}/best'",
        "def f():\n    return 'not a docstring', '.hybrid_zoo_run.json'",
    ],
)
def test_the_scan_finds_each_way_of_spelling_one(source):
    assert spellings(source)


@pytest.mark.parametrize(
    'source',
    [
        "row = {'model': arch, 'weights': 'model'}",
        "arch = results['model']",
        "kind = 'best' if better else 'last'",
        'p = out / MODEL_DIR / CONFIG_NAME',
        "def f():\n    '''Writes metrics.jsonl and model/config.json.'''",
        "msg = 'see the metrics file'",
        "url = 'https://huggingface.co/api/models'",
    ],
)
def test_the_scan_leaves_words_keys_and_docstrings(source):
    assert not spellings(source)


def test_run_files_imports_nothing_but_the_standard_library():
    """Every tier may import it: it adds no dependency to the core."""
    tree = ast.parse(Path(run_files.__file__).read_text())
    imported = {
        alias.name.split('.')[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    } | {node.module.split('.')[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= {'__future__'}, imported
