"""The model factory: one home for model creation, and one checked loader for every weights source on disk.

Hub repos go through the same loader; they are tested against the local Hub server in ``tests/hub/test_loader_checks.py``.
"""

from __future__ import annotations

import ast
import copy
import json
from pathlib import Path

import hypothesis.strategies as st
import pytest
import timm
import torch
from hypothesis import HealthCheck, example, given, settings
from safetensors.torch import load_file, save_file

import hybrid_zoo
from hybrid_zoo import factory

SLIM = {'widths': (32, 32, 64, 64), 'depths': (1, 1, 1, 1)}  # a convformer_tiny that builds in milliseconds


def save_folder(path: Path, arch: str = 'test_resnet', *, seed: int = 0, **kwargs) -> torch.nn.Module:
    """A model folder as ``save_for_hf`` writes it (safetensors only)."""
    torch.manual_seed(seed)
    model = timm.create_model(arch, **kwargs).eval()
    timm.models.save_for_hf(model, path, model_config={'label_names': ['a', 'b']}, safe_serialization=True)
    (path / 'pytorch_model.bin').unlink(missing_ok=True)
    return model


def same_weights(a: torch.nn.Module, b: torch.nn.Module, skip: str = '\0') -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa if not k.startswith(skip))


def to_pickle_only(folder: Path, payload=None) -> None:
    torch.save(
        payload if payload is not None else load_file(folder / 'model.safetensors'), folder / 'pytorch_model.bin'
    )
    (folder / 'model.safetensors').unlink()


def test_factory_is_core_and_every_tier_uses_it():
    tree = ast.parse(Path(factory.__file__).read_text())
    top_level = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    names = [a.name for n in top_level if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or '' for n in top_level if isinstance(n, ast.ImportFrom)]
    core = {'hybrid_zoo.atomic', 'hybrid_zoo.run_files'}  # the dependency-free helpers every tier shares
    assert not [n for n in names if n.startswith(('hybrid_zoo', 'huggingface_hub', 'safetensors')) and n not in core]
    from hybrid_zoo.benchmarks import speed_worker as speed
    from hybrid_zoo.hub import client
    from hybrid_zoo.train import evaluate
    from hybrid_zoo_config.bench import BenchConfig

    for name in ('create_model', 'load_model', 'resolve_model_source', 'model_name'):
        assert getattr(evaluate, name) is getattr(factory, name)  # the trainer imports these from evaluate
    assert evaluate.UnknownModelError is factory.UnknownModelError
    assert client.build_from_folder is factory.build_from_folder
    assert client.CorruptWeightsError is factory.CorruptWeightsError
    vit = speed._create_model('test_vit', BenchConfig(img_size=64, num_classes=3))
    assert vit.patch_embed.img_size == (64, 64) and vit.num_classes == 3


@pytest.mark.parametrize(
    'key, value',
    [('hf_hub_filename', 'other.bin'), ('file', 'other.bin'), ('url', 'http://127.0.0.1:9/other.bin'),
     ('custom_load', True), ('state_dict', {'fc.weight': [0.0]})],
)  # fmt: skip
def test_a_config_that_names_its_own_weights_is_refused(tmp_path, key, value):
    """A config.json does not choose the file the loader reads: naming one is refused, by field, before loading."""
    folder = tmp_path / 'model'
    model = save_folder(folder, num_classes=2)
    torch.save(timm.create_model('test_resnet', num_classes=2).state_dict(), folder / 'other.bin')  # other weights
    config = json.loads((folder / 'config.json').read_text())
    config['pretrained_cfg'][key] = str(folder / value) if key == 'file' else value
    (folder / 'config.json').write_text(json.dumps(config))
    for load in (
        lambda: factory.load_model(folder),
        lambda: factory.create_model(f'local-dir:{folder}', pretrained=True),
        lambda: factory.build_from_folder(folder),
    ):
        with pytest.raises(factory.ConfigError, match=rf'config\.json pretrained_cfg\.{key} is .*expected no {key}'):
            load()
    # the repo and source a config records are overwritten by where it was found, as in timm
    config['pretrained_cfg'].pop(key)
    config['pretrained_cfg'].update(hf_hub_id='someone/else', source='hf-hub')
    (folder / 'config.json').write_text(json.dumps(config))
    loaded = factory.load_model(folder)
    assert same_weights(model, loaded)
    assert loaded.pretrained_cfg['source'] == 'local-dir' and loaded.pretrained_cfg['file'] == str(folder)
    assert 'hf_hub_id' not in loaded.pretrained_cfg


def test_pickle_only_folders_are_refused_unless_allowed(tmp_path):
    folder = tmp_path / 'model'
    model = save_folder(folder, num_classes=2)
    to_pickle_only(folder)
    with pytest.raises(factory.PickleRefusedError, match=r'pytorch_model\.bin is a pickle.*allow_pickle=True'):
        factory.load_model(folder)
    assert same_weights(model, factory.load_model(folder, allow_pickle=True))
    ran = []

    class Payload:  # what a hostile pickle holds: code that runs when unpickled
        def __reduce__(self):
            return (ran.append, ('unpickling ran code',))

    save_folder(tmp_path / 'hostile', num_classes=2)
    to_pickle_only(tmp_path / 'hostile', {'x': Payload()})
    with pytest.raises(factory.PickleRefusedError, match=r'weights_only=True\) refused it'):
        factory.load_model(tmp_path / 'hostile', allow_pickle=True)
    assert ran == []


def test_overrides_adapt_the_checked_weights_as_timm_does(tmp_path):
    """A new classifier for other classes, the first conv summed for 1 channel, through the model's filter."""
    folder = tmp_path / 'model'
    model = save_folder(folder, 'convformer_tiny', num_classes=3, **SLIM)
    reference = model.state_dict()
    head = factory.load_model(folder, num_classes=7)
    assert head.get_classifier().out_features == 7
    assert all(torch.equal(v, reference[k]) for k, v in head.state_dict().items() if not k.startswith('head.fc'))
    gray = factory.load_model(folder, in_chans=1)
    conv = gray.pretrained_cfg['first_conv'] + '.weight'
    assert torch.allclose(gray.state_dict()[conv], reference[conv].sum(dim=1, keepdim=True))
    features = factory.load_model(folder, features_only=True)
    assert len(features(torch.randn(1, 3, 64, 64))) == 4
    # a training checkpoint wrapped as {'model': ...} goes through convformer_fusion.checkpoint_filter_fn
    to_pickle_only(folder, {'model': dict(reference)})
    assert same_weights(model, factory.load_model(folder, allow_pickle=True))


def nan_classifier(sd: dict) -> None:
    sd['fc.weight'] = torch.full_like(sd['fc.weight'], float('nan'))


def one_inf(sd: dict) -> None:
    sd['fc.bias'] = torch.tensor([0.0, float('inf')])


def as_int64(sd: dict) -> None:
    sd.update({k: v.long() for k, v in sd.items()})


@pytest.mark.parametrize(
    'spoil, match',
    [
        (nan_classifier, r"tensor 'fc\.weight' \(2, 96\) holds 192 NaN/inf value\(s\) of 192"),
        (one_inf, r"tensor 'fc\.bias' \(2,\) holds 1 NaN/inf"),
        (as_int64, r'\(torch\.int64 where the model has torch\.float32\).*expected floating-point weights'),
    ],
    ids=['nan', 'inf', 'int64'],
)
def test_unusable_weights_are_refused_and_named(tmp_path, spoil, match):
    folder = tmp_path / 'model'
    save_folder(folder, num_classes=2)
    sd = load_file(folder / 'model.safetensors')
    spoil(sd)
    save_file(sd, folder / 'model.safetensors')
    with pytest.raises(factory.CorruptWeightsError, match=match):
        factory.load_model(folder)


def test_half_precision_weights_load_cast(tmp_path):
    folder = tmp_path / 'model'
    model = save_folder(folder, num_classes=2)
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in load_file(folder / 'model.safetensors').items()}
    save_file(half, folder / 'model.safetensors')
    loaded = factory.load_model(folder)
    assert all(v.dtype == model.state_dict()[k].dtype for k, v in loaded.state_dict().items())


def test_names_and_sources():
    assert hybrid_zoo.MODEL_NAMES  # the plugin is registered
    with pytest.raises(factory.UnknownModelError, match=r'Did you mean: test_resnet.*import hybrid_zoo'):
        factory.create_model('test_resnt')
    with pytest.raises(factory.ModelLoadError, match='has no pretrained weights'):
        factory.create_model('convformer_tiny', pretrained=True)  # the untagged entry has no weights
    with pytest.raises(factory.ModelLoadError, match='/nonexistent/folder does not exist: expected a folder'):
        factory.load_model('local-dir:/nonexistent/folder')
    with pytest.raises(factory.ModelLoadError, match='has no config.json'):
        factory.load_model(Path(__file__).parent)
    assert factory.create_model('test_vit', img_size=48).patch_embed.img_size == (48, 48)
    assert factory.create_model('test_resnet', img_size=48).num_classes == 1000  # a size is not forced on CNNs


def test_registry_tags_keep_the_fast_failure(tmp_path, monkeypatch):
    """A tag whose weights are nowhere fails in seconds with directions, through the checked loader too."""
    import huggingface_hub.constants

    from hybrid_zoo.models.pretrained import PretrainedWeightsNotFoundError

    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_OFFLINE', True)
    with pytest.raises(PretrainedWeightsNotFoundError, match='hybrid-zoo/convformer_tiny.fmnist_64.*HF_HUB_OFFLINE'):
        factory.load_model('convformer_tiny.fmnist_64', cache_dir=tmp_path)


# ---- untrusted config.json --------------------------------------------------------------------------------------------
def slim_folder(path: Path) -> dict:
    """A slim convformer_tiny folder as the trainer writes it; returns its config."""
    save_folder(path, 'convformer_tiny', num_classes=2, **SLIM)
    return json.loads((path / 'config.json').read_text())


def write_config(path: Path, config: dict) -> None:
    (path / 'config.json').write_text(json.dumps(config))


def test_a_config_cannot_make_loading_lenient(tmp_path):
    """model_args.pretrained_strict=false with half the tensors gone: refused by name; strict loading names what
    is missing; only the caller may ask for a partial load."""
    folder = tmp_path / 'model'
    config = slim_folder(folder)
    weights = load_file(folder / 'model.safetensors')
    kept = dict(list(weights.items())[: len(weights) // 2])
    save_file(kept, folder / 'model.safetensors')
    write_config(folder, {**config, 'model_args': {**config['model_args'], 'pretrained_strict': False}})
    with pytest.raises(factory.ConfigError, match=r'model_args\.pretrained_strict is a loading option of the factory'):
        factory.load_model(folder)
    write_config(folder, config)
    # without the stem and the head (the model's filter, which names missing blocks itself, passes them on)
    kept = {k: v for k, v in weights.items() if not k.startswith(('stem.', 'head.'))}
    save_file(kept, folder / 'model.safetensors')
    with pytest.raises(factory.CorruptWeightsError, match=r'does not fit the model.*Missing key\(s\).*stem'):
        factory.load_model(folder)
    partial = factory.load_model(folder, pretrained_strict=False)  # asked for by the caller: loaded as far as it goes
    assert all(torch.equal(partial.state_dict()[k], v) for k, v in kept.items())


@pytest.mark.parametrize(
    'change, match',
    [
        ({'model_args': {'checkpoint_path': '/tmp/x.pth'}}, r'model_args\.checkpoint_path is a loading option'),
        ({'model_args': {'pretrained_cfg_overlay': {'file': 'x'}}}, r'model_args\.pretrained_cfg_overlay is a loading'),
        ({'model_args': {'not_an_arg': 1}}, r'model_args\.not_an_arg is not an argument of convformer_tiny'),
        ({'num_classes': -5}, r'config\.json num_classes is -5; expected an integer from 0 to 100,000'),
        ({'model_args': {'num_classes': -5}}, r'model_args\.num_classes is -5; expected an integer from 0 to'),
        ({'model_args': {'in_chans': 100000}}, r'model_args\.in_chans is 100000; expected an integer from 1 to 1,024'),
        ({'model_args': {'depths': [100000, 1, 1, 1]}}, r'depths is \[100000, 1, 1, 1\]; expected .* at most 256'),
        ({'model_args': {'widths': [65536] * 4}}, r'with [\d,]+ parameters .*expected at most 1,000,000,000'),
        ({'model_args': {'mlp_ratio': 1e300}}, r'parameters|do not build'),
        ({'pretrained_cfg': {'input_size': [1, 20000, 64]}}, r'pretrained_cfg\.input_size is \[1, 20000, 64\]'),
        ({'pretrained_cfg': {'unknown_field': 1}}, r'pretrained_cfg has fields timm does not know: unknown_field'),
        ({'label_names': ['x'] * 100_001}, r'label_names is .*expected a list or object of at most 100,000 labels'),
        ({'model_args': {'fusion': 'sideways'}}, r'do not build convformer_tiny: ValueError: fusion must be one of'),
    ],
    ids=lambda v: None if isinstance(v, str) else next(iter(v.get('model_args', v))),
)
def test_an_untrusted_config_is_bounded_before_anything_is_built(tmp_path, change, match):
    """Each refusal names the field, the limit and the value: no TypeError, no allocation, no silent acceptance."""
    folder = tmp_path / 'model'
    config = slim_folder(folder)
    for key, value in change.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) else value
    write_config(folder, config)
    for load in (lambda: factory.load_model(folder), lambda: factory.build_from_folder(folder)):
        with pytest.raises(factory.ConfigError, match=match):
            load()


def test_a_config_nested_deeper_than_any_model_needs_is_refused_unparsed(tmp_path):
    folder = tmp_path / 'model'
    slim_folder(folder)
    (folder / 'config.json').write_text('[' * 200_000 + ']' * 200_000)
    with pytest.raises(factory.ConfigError, match=r'nests 200000 levels .*expected at most 16'):
        factory.load_model(folder)
    text = '{"architecture": "convformer_tiny", "pretrained_cfg": {"description": "' + '[{' * 100 + '"}}'
    (folder / 'config.json').write_text(text)
    factory.build_from_folder(folder)  # brackets inside strings are text, not nesting
    (folder / 'config.json').write_bytes(b' ' * (factory.MAX_CONFIG_BYTES + 1))
    with pytest.raises(factory.ConfigError, match=r'config\.json is [\d,]+ bytes; expected at most'):
        factory.build_from_folder(folder)


def test_old_configs_that_repeat_the_head_in_model_args_still_load(tmp_path):
    """Configs published before pushes dropped num_classes from model_args load through the checked loader, and a
    caller's num_classes still replaces the head."""
    folder = tmp_path / 'model'
    config = slim_folder(folder)
    config['model_args'].update(num_classes=2, in_chans=3, global_pool='avg')
    write_config(folder, config)
    assert factory.load_model(folder).num_classes == 2
    assert factory.load_model(folder, num_classes=5).num_classes == 5


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=10,
)
FIELDS = [
    ('num_classes',),
    ('label_names',),
    ('pretrained_cfg', 'num_classes'),
    ('pretrained_cfg', 'input_size'),
    ('pretrained_cfg', 'test_input_size'),
    *(('pretrained_cfg', k) for k in ('mean', 'std', 'crop_pct', 'crop_mode', 'interpolation', 'fixed_input_size')),
    *(('model_args', k) for k in ('num_classes', 'in_chans', 'widths', 'depths', 'head_dim', 'kv_reductions')),
    *(('model_args', k) for k in ('mlp_ratio', 'attn_every', 'fusion', 'branch_scale', 'rep_dw', 'act_layer')),
    *(('model_args', k) for k in ('downsample', 'first_stage')),
    # not constructor arguments (knobs of rejected designs, now the lab's; a made-up name): refused by name
    *(('model_args', k) for k in ('attn_heads', 'conv_kernel_size', 'kernel')),
    *(('model_args', k) for k in ('pretrained_strict', 'checkpoint_path', 'features_only', 'img_size')),
]
SIZES = st.one_of(
    st.integers(min_value=-(10**12), max_value=10**12),
    st.lists(st.integers(min_value=-(10**9), max_value=10**9), min_size=0, max_size=6),
)


@pytest.mark.filterwarnings('ignore:Initializing zero-element tensors')  # a zero width builds, and fails at forward
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(FIELDS), value=st.one_of(JSON, SIZES))
@example(field=('pretrained_cfg', 'input_size'), value=None)  # timm's parser indexed a null input_size
def test_any_config_field_is_built_within_bounds_or_refused_by_name(slim_config, field, value):
    """Over config fields and JSON values: check_config either refuses with a ConfigError naming the field (or the
    parameter count the values add up to), or the model it lets through is within every bound."""
    config = copy.deepcopy(slim_config)
    node = config
    for key in field[:-1]:
        node = node.setdefault(key, {})
    node[field[-1]] = value
    try:
        factory.check_config(config, 'untrusted')
    except factory.ConfigError as e:
        assert '.'.join(field) in str(e) or 'parameters' in str(e) or 'do not build' in str(e), (field, str(e))
        return
    model = timm.create_model('convformer_tiny', device='meta', **{**SLIM_ARGS, **config.get('model_args', {})})
    assert sum(p.numel() for p in model.parameters()) <= factory.MAX_PARAMS
    pcfg = factory._parsed_config(config, {}).pretrained_cfg  # what timm's loader makes of it
    data_config = timm.data.resolve_data_config(pretrained_cfg=pcfg)  # what a user's pipeline reads from it
    assert len(data_config['input_size']) == 3 and data_config['crop_pct'] > 0
    assert 0 <= (config.get('num_classes') or 0) <= factory.MAX_NUM_CLASSES
    assert 1 <= model.in_chans <= factory.MAX_IN_CHANS and 0 <= model.num_classes <= factory.MAX_NUM_CLASSES


SLIM_ARGS = {'widths': [32, 32, 64, 64], 'depths': [1, 1, 1, 1]}


@pytest.fixture(scope='module')
def slim_config(tmp_path_factory) -> dict:
    return slim_folder(tmp_path_factory.mktemp('slim') / 'model')


def test_every_spelling_of_a_folder_loads_the_same_weights(tmp_path, monkeypatch):
    """A folder path as it is, relative or absolute, and local-dir: — through create_model (what export, push and
    train --pretrained use) and load_model (eval) — give one set of weights."""
    folder = tmp_path / 'model'
    slim_folder(folder)
    monkeypatch.chdir(tmp_path)
    x = torch.randn(1, 3, 64, 64)
    outputs = []
    for name in ('model', str(folder), f'local-dir:{folder}'):
        for load in (lambda n: factory.create_model(n, pretrained=True), factory.load_model):
            with torch.no_grad():
                outputs.append(load(name).eval()(x))
    assert all(torch.equal(outputs[0], o) for o in outputs[1:])
    with pytest.raises(factory.UnknownModelError):
        factory.create_model(str(tmp_path / 'missing-folder'))  # not a folder: read as a model name
