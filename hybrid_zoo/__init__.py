"""hybrid_zoo: fused convolution + attention image classifiers, native to timm.

Importing the package registers the nine ``convformer_*`` models in timm's registry; it needs only
torch and timm, and prints, warns and downloads nothing. Training, Hub and export code live in
submodules that import their own dependencies when used.
"""

from .models import MODEL_NAMES, ConvFormerFusion, list_models, list_variants

__version__ = '0.1.0'
__all__ = ['MODEL_NAMES', 'ConvFormerFusion', 'list_models', 'list_variants', '__version__']

# the tiers load when first named (``hybrid_zoo.hub.load(...)``, as the model cards show), never at import
_SUBMODULES = ('hub', 'train', 'benchmarks', 'factory', 'export', 'deploy', 'describe', 'flops', 'labels')


def __getattr__(name: str):
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f'{__name__}.{name}')
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
