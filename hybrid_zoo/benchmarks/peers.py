"""The peers we measure ourselves against and the targets we hold ourselves to: the one home of both.

Every benchmark (speed, profile, the Fashion-MNIST comparison and its GPU protocol) takes its model lists from
here; ``model_cards/results/`` records what each run measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hybrid_zoo.models.variants import SIZE_OF
from hybrid_zoo_config.bench import PEER_SIZES

# the peers of each size class, anchors of the same GMACs (see ../shared DESIGN's table): CoAtNet first
PEER_SETS: dict[str, tuple[str, ...]] = {
    'tiny': ('coatnet_nano_rw_224', 'convnext_nano', 'tiny_vit_5m_224', 'fastvit_t12', 'efficientformerv2_s1'),
    'small': (
        'coatnet_0_rw_224',
        'caformer_s18',
        'convnext_tiny',
        'fastvit_sa24',
        'nextvit_small',
        'efficientformerv2_l',
        'maxvit_tiny_tf_224',
    ),
    'base': ('coatnet_1_rw_224', 'caformer_s36', 'convnext_small', 'efficientvit_l1'),
}
assert tuple(PEER_SETS) == PEER_SIZES
# the peers trained under the Fashion-MNIST comparison's recipe (the tiny anchors that take 1-channel 64 px input)
FMNIST_PEERS: tuple[str, ...] = ('coatnet_nano_rw_224', 'convnext_nano', 'tiny_vit_5m_224')

# the tiny front (recipe front96): the efficient hybrids a CPU user would pick instead, the ImageNet anchors of the same
# GMACs, and two CPU-fast pure CNNs as controls
FRONT_PEERS: tuple[str, ...] = (
    'tiny_vit_5m_224',
    'fastvit_t12',
    'efficientformerv2_s1',
    'coatnet_nano_rw_224',
    'convnext_nano',
    'repvit_m1_0',
    'mobilenetv4_conv_medium',
)
# the small front: the peers of the small size class that take any 1-channel input under the same recipe
FRONT_PEERS_SMALL: tuple[str, ...] = ('fastvit_sa24', 'convnext_tiny', 'coatnet_0_rw_224', 'caformer_s18')


def fitted_kwargs(model: str, img_size: int) -> dict:
    """Constructor arguments that fit a peer's attention windows to the maps of an ``img_size`` input.

    TinyViT's windows (7, 14, 7 for its stages at strides 8, 16, 32) are sized for 224 px maps (28, 14, 7); on a
    smaller map a window larger than the map is zero-padded (at 96 px its stride-16 window holds 36 real tokens and 160
    padding). Each window becomes the smallest divisor of its map not below timm's window, or the whole map: timm's
    own windows at 224 px, global attention without padding on small maps. Other models: no change.
    """
    if not model.startswith('tiny_vit_'):
        return {}
    default = (7, 7, 14, 7)  # timm's TinyViT window_sizes; stage 1 is convolutional and ignores its entry
    maps = [math.ceil(img_size / stride) for stride in (4, 8, 16, 32)]
    fitted = [default[0]]
    for side, window in zip(maps[1:], default[1:], strict=True):
        fitted.append(next((d for d in range(window, side + 1) if side % d == 0), side))
    return {'window_sizes': tuple(fitted)}


def takes_drop_path(model: str) -> bool:
    """Whether ``model``'s constructor takes ``drop_path_rate`` (RepViT has no stochastic depth, and timm passes the
    argument through to it): built on the meta device, nothing allocated."""
    import timm

    try:
        timm.create_model(model, drop_path_rate=0.05, device='meta')
    except TypeError as e:
        if 'drop_path_rate' in str(e):
            return False
        raise
    return True


COATNET = {'tiny': 'coatnet_nano_rw_224', 'small': 'coatnet_0_rw_224', 'base': 'coatnet_1_rw_224'}
SIZES = PEER_SIZES


@dataclass(frozen=True)
class Target:
    """``model``'s ``metric`` must reach ``minimum`` x ``baseline``'s, or ``minimum`` itself without a baseline.

    ``metric`` is a row key: ``infer_img_s`` / ``train_img_s`` (ratios) or ``pct_onednn`` (percent of the
    machine's oneDNN 1x1-conv rate, measured in the same run).
    """

    model: str
    metric: str
    minimum: float
    baseline: str | None = None

    @property
    def label(self) -> str:
        what = {'infer_img_s': 'img/s', 'train_img_s': 'train img/s', 'pct_onednn': 'GFLOP/s'}[self.metric]
        if self.baseline is None:
            return f'{self.model} {what} >= {self.minimum:g}% of oneDNN 1x1'
        return f'{self.model} {what} >= {self.minimum:g}x {self.baseline}'


def _performance_targets() -> tuple[Target, ...]:
    """The performance targets against CoAtNet, ConvNeXt and CAFormer (docs/performance.md; fp32, batch 32 at 224 px, fastest layout, reparameterized)."""
    targets = [
        Target('convformer_small', 'infer_img_s', 1.25, 'coatnet_0_rw_224'),
        Target('convformer_small', 'infer_img_s', 1.6, 'convnext_tiny'),
        Target('convformer_small', 'infer_img_s', 1.8, 'caformer_s18'),
        Target('convformer_small_late', 'infer_img_s', 1.4, 'coatnet_0_rw_224'),
        Target('convformer_small_late', 'infer_img_s', 1.8, 'convnext_tiny'),
        Target('convformer_small_late', 'infer_img_s', 2.0, 'caformer_s18'),
        Target('convformer_tiny', 'infer_img_s', 1.5, 'coatnet_nano_rw_224'),
        Target('convformer_tiny', 'infer_img_s', 1.0, 'convnext_nano'),
        Target('convformer_tiny_late', 'infer_img_s', 1.7, 'coatnet_nano_rw_224'),
        Target('convformer_tiny_late', 'infer_img_s', 1.15, 'convnext_nano'),
        Target('convformer_base', 'infer_img_s', 1.25, 'coatnet_1_rw_224'),
        Target('convformer_base', 'infer_img_s', 1.8, 'caformer_s36'),
        Target('convformer_base_late', 'infer_img_s', 1.4, 'coatnet_1_rw_224'),
    ]
    targets += [Target(f'convformer_{size}_early', 'infer_img_s', 1.1, COATNET[size]) for size in SIZES]
    targets += [Target(f'convformer_{size}', 'pct_onednn', 80.0) for size in SIZES]
    targets += [Target(f'convformer_{size}_late', 'pct_onednn', 90.0) for size in SIZES]
    targets += [
        Target(f'convformer_{size}{fusion}', 'train_img_s', 1.3, COATNET[size])
        for size in SIZES
        for fusion in ('_early', '', '_late')
    ]
    return tuple(targets)


TARGETS = _performance_targets()

# the profile's default: ours by size, each followed by the peers its targets name (CoAtNet first)
PROFILE_MODELS: tuple[str, ...] = tuple(
    dict.fromkeys(
        name
        for size in SIZES
        for name in (
            *(m for m in SIZE_OF if SIZE_OF[m] == size),
            *(t.baseline for t in TARGETS if t.baseline and SIZE_OF.get(t.model) == size and t.metric == 'infer_img_s'),
        )
    )
)
