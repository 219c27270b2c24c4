"""Published weights: the pretrained tags registered next to each architecture's untagged entry.

A tag is ``<architecture>.<tag>`` with ``hf_hub_id='<HUB_ORG>/<architecture>.<tag>'``, so
``timm.create_model('convformer_tiny_late.fmnist_64', pretrained=True)`` downloads ``model.safetensors`` from
that repo (through ``HF_ENDPOINT``, so a local Hub server serves it as well as huggingface.co) and builds the
model its cfg describes: here 1 input channel, 10 classes, 64 px. The weights are the best test run of each
model in the Fashion-MNIST comparison; ``hybrid-zoo compare --publish`` pushes them.

timm makes a tag with weights the architecture's default, which would turn ``create_model('convformer_tiny')``
into a 1-channel, 10-class model: ``keep_untagged_default`` undoes that, so only an explicit tag (or
``pretrained=True`` on a name whose default has weights, none here) picks these weights.
"""

from __future__ import annotations

import numpy as np
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

HUB_ORG = 'hybrid-zoo'

# label order of the original release: https://github.com/zalandoresearch/fashion-mnist#labels
FASHION_MNIST_CLASSES = (
    'T-shirt/top',
    'Trouser',
    'Pullover',
    'Dress',
    'Coat',
    'Sandal',
    'Shirt',
    'Sneaker',
    'Bag',
    'Ankle boot',
)

# The trainer's data config for a grayscale model (``data.model_data_config``): the ImageNet mean/std of the
# untagged cfg, averaged over the channels, computed the same way.
_GRAY_MEAN = (float(np.mean(IMAGENET_DEFAULT_MEAN)),)
_GRAY_STD = (float(np.mean(IMAGENET_DEFAULT_STD)),)

FMNIST_TAG = 'fmnist_64'
# the models trained in the comparison (hybrid_zoo.compare.OURS_TINY); one tag per published model
FMNIST_MODELS = ('convformer_tiny_early', 'convformer_tiny', 'convformer_tiny_late')


def fmnist_cfg() -> dict:
    """The pretrained-cfg fields of a Fashion-MNIST 64 px tag (architecture-independent)."""
    return {
        'num_classes': len(FASHION_MNIST_CLASSES),
        'input_size': (1, 64, 64),
        'pool_size': (2, 2),
        'mean': _GRAY_MEAN,
        'std': _GRAY_STD,
        'crop_pct': 0.95,
        'interpolation': 'bicubic',
        'label_names': FASHION_MNIST_CLASSES,
        'description': 'Trained from scratch on Fashion-MNIST (28x28 grayscale, resized to 64 px), 10 classes.',
    }


def pretrained_tags() -> dict[str, dict]:
    """``'<architecture>.<tag>'`` -> cfg fields (``hf_hub_id`` included) for every published weight."""
    return {f'{m}.{FMNIST_TAG}': dict(fmnist_cfg(), hf_hub_id=f'{HUB_ORG}/{m}.{FMNIST_TAG}') for m in FMNIST_MODELS}


def keep_untagged_default(default_cfgs: dict) -> None:
    """Put each architecture's untagged (ImageNet-shaped, weightless) cfg back in front of its tags."""
    for dc in default_cfgs.values():
        if '' in dc.tags and dc.tags[0] != '':
            dc.tags.remove('')
            dc.tags.appendleft('')
