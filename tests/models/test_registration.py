"""Registration the timm way: each registered name is a function ``grep`` and an IDE find, and each architecture's
depths are written in the variant table, not computed."""

from __future__ import annotations

import ast
import inspect

import pytest
import timm
from timm.models import get_pretrained_cfg, model_entrypoint

import hybrid_zoo  # noqa: F401  (registers the models)
from hybrid_zoo.models import convformer_fusion, variants
from hybrid_zoo.models.variants import VARIANTS, VARIANTS_V1


def _decorated_functions(module) -> dict[str, ast.FunctionDef]:
    tree = ast.parse(inspect.getsource(module))
    return {
        node.name: node
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and any(ast.unparse(d) == 'register_model' for d in node.decorator_list)
    }


def test_every_variant_is_a_written_register_model_function():
    functions = _decorated_functions(convformer_fusion)
    assert list(functions) == list(VARIANTS)  # one each, in table order, and nothing registered besides
    for name in VARIANTS:
        assert model_entrypoint(name) is getattr(convformer_fusion, name)
        assert inspect.getsourcefile(model_entrypoint(name)) == inspect.getsourcefile(convformer_fusion)
        assert get_pretrained_cfg(name).architecture == name


@pytest.mark.parametrize('table', ['VARIANTS', 'VARIANTS_V1'])
def test_the_tables_write_each_architecture_out(table):
    """Each entry of the table is a ``ConvFormerCfg(...)`` call whose depths are a tuple of integer literals."""
    tree = ast.parse(inspect.getsource(variants))
    assign = next(
        n for n in tree.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name) and n.target.id == table
    )
    assert isinstance(assign.value, ast.Dict), f'{table} is computed, not written'
    entries = {}
    for key, value in zip(assign.value.keys, assign.value.values, strict=True):
        assert (
            isinstance(key, ast.Constant) and isinstance(value, ast.Call) and ast.unparse(value.func) == 'ConvFormerCfg'
        )
        depths = next(k.value for k in value.keywords if k.arg == 'depths')
        assert isinstance(depths, ast.Tuple) and all(isinstance(e, ast.Constant) for e in depths.elts), key.value
        entries[key.value] = tuple(e.value for e in depths.elts)
    assert entries == {name: cfg.depths for name, cfg in getattr(variants, table).items()}
    assert set(entries) == set(VARIANTS) == set(VARIANTS_V1)


def test_an_entrypoint_builds_its_table_entry_and_kwargs_override_it():
    model = timm.create_model('convformer_tiny_early', num_classes=7, depths=(1, 1, 2, 1), widths=(32, 32, 64, 64))
    assert [len(s.blocks) for s in model.stages] == [1, 1, 2, 1] and model.num_classes == 7
    default = timm.create_model('convformer_tiny_early', num_classes=3)
    assert [len(s.blocks) for s in default.stages] == list(VARIANTS['convformer_tiny_early'].depths)
