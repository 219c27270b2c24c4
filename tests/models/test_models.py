"""The timm model contract, checked for every registered variant (what timm's own suite and users rely on)."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import timm
import torch
from torch import nn

import hybrid_zoo
from hybrid_zoo.models import VARIANTS

NAMES = hybrid_zoo.list_variants()
TINY = [n for n in NAMES if n.startswith('convformer_tiny')]
EXPECTED = {f'convformer_{size}{suffix}' for size in ('tiny', 'small', 'base') for suffix in ('', '_early', '_late')}


def _create(name: str, **kwargs) -> torch.nn.Module:
    return timm.create_model(name, pretrained=False, **kwargs)


def test_exactly_nine_models_registered():
    assert set(NAMES) == EXPECTED
    assert set(timm.list_models(module='convformer_fusion')) == EXPECTED
    for name in NAMES:
        assert timm.models.model_entrypoint(name).__module__ == 'hybrid_zoo.models.convformer_fusion'


def test_import_is_quiet_cheap_and_overwrites_nothing():
    code = (
        'import sys, warnings\n'
        'warnings.simplefilter("always")\n'
        'import timm\n'
        'before = set(timm.list_models())\n'
        'with warnings.catch_warnings(record=True) as caught:\n'
        '    warnings.simplefilter("always")\n'
        '    import hybrid_zoo\n'
        'assert not [w for w in caught if "Overwriting" in str(w.message)], caught\n'
        'assert not caught, [str(w.message) for w in caught]\n'
        'after = set(timm.list_models())\n'
        'assert before.isdisjoint(hybrid_zoo.MODEL_NAMES)\n'
        'assert after - before == set(hybrid_zoo.MODEL_NAMES)\n'
        'heavy = {"accelerate", "datasets", "onnx", "onnxruntime", "matplotlib", "sklearn"} & set(sys.modules)\n'
        'assert not heavy, heavy\n'
    )
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout == ''


@pytest.mark.parametrize('name', NAMES)
def test_forward_at_cfg_size_and_grad_checkpointing(name):
    model = _create(name).eval()
    cfg = model.pretrained_cfg
    x = torch.randn(1, *cfg['input_size'])
    with torch.no_grad():
        out = model(x)
        assert out.shape == (1, cfg['num_classes'])
        assert torch.isfinite(out).all()
        model.set_grad_checkpointing()
        torch.testing.assert_close(model(x), out, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('name', NAMES)
def test_backward_every_parameter_gets_a_gradient(name):
    model = _create(name, num_classes=42, drop_path_rate=0.1).train()
    out = model(torch.randn(2, 3, 128, 128))
    assert out.shape == (2, 42)
    out.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing


def test_pretrained_tags_are_registered_but_not_default():
    from hybrid_zoo.models.pretrained import FMNIST_MODELS, HUB_ORG

    tags = [f'{m}.fmnist_64' for m in FMNIST_MODELS]
    assert sorted(timm.list_pretrained('convformer_tiny*')) == sorted(tags)
    for tag in tags:
        cfg = timm.models.get_pretrained_cfg(tag)
        assert (
            cfg.hf_hub_id.split('@')[0] == f'{HUB_ORG}/{tag}'
            and cfg.input_size == (1, 64, 64)
            and cfg.num_classes == 10
        )
        assert len(cfg.label_names) == 10
    # the tag's normalisation is what the trainer derives for the untagged model built grayscale
    from hybrid_zoo.train.data import model_data_config

    trained_as = model_data_config(timm.create_model(FMNIST_MODELS[-1], in_chans=1, num_classes=10), 64, 1)
    assert (trained_as['mean'], trained_as['std']) == (cfg.mean, cfg.std)
    # the tag's cfg shapes the model it builds (without downloading anything)
    model = timm.create_model(tags[-1])
    assert model.num_classes == 10 and model.pretrained_cfg['tag'] == 'fmnist_64'
    assert model(torch.randn(1, 1, 64, 64)).shape == (1, 10)
    assert timm.create_model(FMNIST_MODELS[-1]).num_classes == 1000


@pytest.mark.parametrize('name', NAMES)
def test_default_cfg_contract(name):
    model = _create(name).eval()
    cfg = model.pretrained_cfg
    for key in ('input_size', 'pool_size', 'crop_pct', 'interpolation', 'mean', 'std', 'first_conv', 'classifier'):
        assert cfg.get(key) is not None, key
    assert cfg['license'] == 'apache-2.0'
    assert not cfg.get('hf_hub_id') and not cfg.get('url')  # the untagged default stays weightless
    assert cfg['num_classes'] == 1000 and cfg['input_size'] == (3, 224, 224)  # a weight tag never becomes default
    state = model.state_dict()
    assert cfg['classifier'] + '.weight' in state and cfg['first_conv'] + '.weight' in state
    x = torch.randn(1, *cfg['input_size'])
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (1, model.num_features, *cfg['pool_size'])
        assert model.forward_head(feats, pre_logits=True).shape == (1, model.head_hidden_size)
        torch.testing.assert_close(model.forward_head(feats), model(x))
        model.reset_classifier(0)
        assert model(x).shape == (1, model.head_hidden_size)
        assert isinstance(model.get_classifier(), torch.nn.Identity)
        model.reset_classifier(0, '')
        assert model(x).shape == (1, model.num_features, *cfg['pool_size'])
        model.reset_classifier(7, 'avg')
        assert model(x).shape == (1, 7)
        headless = _create(name, num_classes=0, global_pool='').eval()
        assert headless(x).shape == (1, model.num_features, *cfg['pool_size'])


@pytest.mark.parametrize('name', NAMES)
def test_features_only_and_intermediates(name):
    size = 96
    feat_model = _create(name, features_only=True).eval()
    assert feat_model.feature_info.reduction() == [4, 8, 16, 32]
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        feats = feat_model(x)
    assert len(feats) == 4
    for f, chs, red in zip(feats, feat_model.feature_info.channels(), feat_model.feature_info.reduction(), strict=True):
        assert f.shape == (1, chs, math.ceil(size / red), math.ceil(size / red))
    model = _create(name).eval()
    assert [f['reduction'] for f in model.feature_info] == [4, 8, 16, 32]
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x))
        assert [t.shape[1] for t in inter] == list(VARIANTS[name].widths)
        only = model.forward_intermediates(x, indices=[1, 2], intermediates_only=True)
        torch.testing.assert_close(only[1], inter[2])
        model.set_grad_checkpointing()
        final_ckpt, _ = model.forward_intermediates(x)
        torch.testing.assert_close(final_ckpt, final)
        model.set_grad_checkpointing(False)
        kept = model.prune_intermediate_layers(indices=2)
        assert kept == [2, 3]
        assert model(x).shape == (1, model.num_features, 3, 3)


@pytest.mark.filterwarnings('ignore:`torch.jit.script` is deprecated:FutureWarning')
@pytest.mark.parametrize('name', NAMES)
def test_torchscript(name):
    model = _create(name).eval()
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        scripted = torch.jit.script(model)
        torch.testing.assert_close(scripted(x), model(x))


@pytest.mark.parametrize('name', NAMES)
def test_fx_feature_extraction_forward_and_backward(name):
    from timm.models import get_notrace_functions, get_notrace_modules
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    model = _create(name).eval()
    tracer_kwargs = dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions())
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=tracer_kwargs)
    fx = create_feature_extractor(
        model, train_return_nodes=[train_nodes[-1]], eval_return_nodes=[eval_nodes[-1]], tracer_kwargs=tracer_kwargs
    )
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(next(iter(fx(x).values())), model(x))
    fx.train()
    out = next(iter(fx(torch.randn(2, 3, 96, 96)).values()))
    out.mean().backward()
    assert all(p.grad is not None for p in fx.parameters())


@pytest.mark.parametrize('in_chans', [1, 3, 4])
def test_in_chans(in_chans):
    model = _create('convformer_tiny', in_chans=in_chans, num_classes=5).eval()
    with torch.no_grad():
        assert model(torch.randn(2, in_chans, 64, 64)).shape == (2, 5)


@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize('hw', [(32, 32), (96, 96), (193, 250), (250, 100)])
def test_any_input_size(name, hw):
    model = _create(name, num_classes=3).eval()
    x = torch.randn(1, 3, *hw)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (1, model.num_features, math.ceil(hw[0] / 32), math.ceil(hw[1] / 32))
        assert model.forward_head(feats).shape == (1, 3)


def test_large_input_and_set_input_size_is_a_noop():
    model = _create('convformer_tiny', num_classes=3).eval()
    x = torch.randn(1, 3, 384, 384)
    with torch.no_grad():
        before = model(x)
        model.set_input_size((64, 64))
        torch.testing.assert_close(model(x), before)
        assert model.forward_features(x).shape[-2:] == (12, 12)


@pytest.mark.parametrize(
    'x, match',
    [
        (torch.randn(1, 4, 64, 64), r'expected 3 input channels .* got shape \[1, 4, 64, 64\]'),
        (torch.randn(3, 64, 64), r'expected a 4-D .* got 3-D'),
        (torch.randn(1, 3, 16, 64), r'expected height and width >= 32, got 16x64'),
        (torch.zeros(1, 3, 64, 64, dtype=torch.uint8), r'expected a floating point tensor .* got dtype torch.uint8'),
        (torch.zeros(1, 3, 64, 64, dtype=torch.int64), r'got dtype torch.int64'),
    ],
)
def test_bad_input_raises_value_error(x, match):
    model = _create('convformer_tiny').eval()
    with pytest.raises(ValueError, match=match):
        model(x)
    with pytest.raises(ValueError, match=match):
        model.forward_intermediates(x)


@pytest.mark.parametrize('channels', [2, 4])
def test_a_grayscale_model_refuses_channels_other_than_one_or_three(channels):
    model = _create('convformer_tiny', in_chans=1).eval()
    with pytest.raises(ValueError, match=rf'expected 1 input channels or 3, read as their luma .* \[1, {channels}, 64'):
        model(torch.randn(1, channels, 64, 64))


def test_drop_path_and_optimizer_hooks():
    from timm.optim import create_optimizer_v2

    model = _create('convformer_tiny', drop_path_rate=0.3, num_classes=4)
    rates = [m.drop_prob for m in model.modules() if isinstance(m, timm.layers.DropPath)]
    assert rates and max(rates) == pytest.approx(0.3) and min(rates) < 0.3
    assert model.no_weight_decay() and all(n.endswith('.gamma') for n in model.no_weight_decay())
    opt = create_optimizer_v2(model, 'adamw', lr=1e-3, weight_decay=0.05, layer_decay=0.8)
    assert len(opt.param_groups) > 4  # stem, one group per block, head
    n_params = sum(p.numel() for g in opt.param_groups for p in g['params'])
    assert n_params == sum(p.numel() for p in model.parameters())


def test_fusion_placement_is_where_attention_starts():
    from hybrid_zoo.layers import AttnBlock

    first = {'early': 1, 'mid': 2, 'late': 3}
    for name, cfg in VARIANTS.items():
        model = _create(name)
        attends = [any(isinstance(b, AttnBlock) for b in stage.blocks) for stage in model.stages]
        assert attends == [i >= first[cfg.fusion] for i in range(4)], name
        assert [len(stage.blocks) for stage in model.stages] == list(cfg.depths)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match='fusion must be one of'):
        _create('convformer_tiny', fusion='middle')
    with pytest.raises(ValueError, match='multiple of head_dim'):
        _create('convformer_tiny', head_dim=100)


def test_depthwise_kernel_is_the_registered_seven():
    dw = [m for n, m in _create('convformer_tiny_late').named_modules() if n.endswith('dw.conv')]
    assert dw and all(m.kernel_size == (7, 7) for m in dw)


@pytest.mark.parametrize('knob', ['attn_ratio', 'attn_heads', 'ffn_dw', 'conv_kernel_size'])
def test_knobs_of_rejected_designs_are_not_product_arguments(knob):
    """The lab builds the rejected arms (``hybrid_zoo.benchmarks.candidates``); the product refuses their knobs by
    name, in the constructor and in a config's model_args."""
    from hybrid_zoo import factory

    with pytest.raises(TypeError, match=knob):
        _create('convformer_tiny', **{knob: 1})
    config = {'architecture': 'convformer_tiny', 'num_classes': 10, 'pretrained_cfg': {}, 'model_args': {knob: 1}}
    with pytest.raises(factory.ConfigError, match=rf'model_args\.{knob} is not an argument of convformer_tiny'):
        factory.check_config(config, 'test')


# ---- device / dtype (timm passes both from create_model to the constructor) ------------------------------


def _tensors(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return list(model.named_parameters()) + list(model.named_buffers())


@pytest.mark.parametrize('name', NAMES)
def test_meta_bf16_build_reaches_every_parameter_and_buffer(name):
    model = timm.create_model(name, device='meta', dtype=torch.bfloat16)
    tensors = _tensors(model)
    assert tensors
    assert not [n for n, t in tensors if t.device.type != 'meta'], 'tensors left off the meta device'
    floats = [(n, t.dtype) for n, t in tensors if t.is_floating_point()]
    assert not [(n, d) for n, d in floats if d != torch.bfloat16], 'floating tensors not in bf16'
    counters = [t.dtype for n, t in tensors if n.endswith('num_batches_tracked')]
    assert counters and set(counters) == {torch.int64}  # BatchNorm's step counter stays an integer
    gammas = [p for n, p in model.named_parameters() if n.endswith('.gamma')]  # layer scales, made by hand
    assert gammas and all(p.device.type == 'meta' and p.dtype == torch.bfloat16 for p in gammas)
    model.reset_classifier(7)  # a new head follows the model's device and dtype
    assert (model.head.fc.weight.device.type, model.head.fc.weight.dtype) == ('meta', torch.bfloat16)


def test_meta_build_has_the_default_architecture():
    meta = timm.create_model('convformer_tiny_late', device='meta')
    cpu = timm.create_model('convformer_tiny_late')
    assert [(n, t.shape) for n, t in _tensors(meta)] == [(n, t.shape) for n, t in _tensors(cpu)]
    with torch.device('meta'):  # the other way to build without memory
        assert next(timm.create_model('convformer_tiny_early').parameters()).device.type == 'meta'


def test_bf16_model_runs_a_bf16_forward():
    model = timm.create_model('convformer_tiny', dtype=torch.bfloat16, num_classes=10).eval()
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16 and out.shape == (1, 10) and torch.isfinite(out).all()


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16, torch.float32, torch.float64])
def test_input_check_accepts_every_floating_dtype(dtype):
    from hybrid_zoo.models.model import check_input

    check_input(torch.zeros(1, 3, 32, 32, dtype=dtype), 3)


def test_explicit_device_and_dtype_leave_the_default_init_unchanged():
    torch.manual_seed(0)
    default = timm.create_model('convformer_tiny').state_dict()
    torch.manual_seed(0)
    explicit = timm.create_model('convformer_tiny', device='cpu', dtype=torch.float32).state_dict()
    assert default.keys() == explicit.keys()
    assert all(torch.equal(default[k], explicit[k]) for k in default)


# ---- checkpoint filter ------------------------------------------------------------------------------------
SLIM = {'widths': (32, 32, 64, 64), 'depths': (1, 1, 1, 1)}


def test_checkpoint_filter_fn_unwraps_and_otherwise_passes_through():
    from hybrid_zoo.models.convformer_fusion import checkpoint_filter_fn

    model = _create('convformer_tiny', **SLIM)
    state = model.state_dict()
    assert checkpoint_filter_fn(state, model) is state
    assert checkpoint_filter_fn({'state_dict': state, 'epoch': 3}, model) is state
    assert checkpoint_filter_fn({'model': state, 'optimizer': {}}, model) is state


def test_checkpoint_filter_fn_is_what_pretrained_loading_uses():
    reference = _create('convformer_tiny', **SLIM)
    overlay = {'state_dict': {'model': reference.state_dict()}}  # a training checkpoint, as saved by a trainer
    loaded = timm.create_model('convformer_tiny', pretrained=True, pretrained_cfg_overlay=overlay, **SLIM)
    ref = reference.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in loaded.state_dict().items())


# ---- listing -----------------------------------------------------------------------------------------------


def test_list_models_lists_ours_only():
    timm_own = set(timm.list_models('convformer*')) - EXPECTED
    assert {'convformer_s18', 'convformer_b36'} <= timm_own  # timm's MetaFormer shares the prefix
    assert hybrid_zoo.list_models() == sorted(EXPECTED) == hybrid_zoo.list_models('convformer*')
    assert hybrid_zoo.list_models('*_late') == ['convformer_base_late', 'convformer_small_late', 'convformer_tiny_late']
    tags = hybrid_zoo.list_models(pretrained=True)
    assert tags == sorted(
        f'{m}.fmnist_64' for m in ('convformer_tiny', 'convformer_tiny_early', 'convformer_tiny_late')
    )
    assert hybrid_zoo.list_models('convformer*', pretrained=True) == tags
    assert set(timm.list_models('convformer*', pretrained=True)) > set(tags)  # plus timm's MetaFormer tags
