"""GPU Fashion-MNIST protocol (at most about 5 minutes): the nine ConvFormer models and the tiny and small
peers, one identical recipe, the full training set, bf16; see ``hybrid_zoo/benchmarks/gpu_fmnist.py``.

On a machine without the Debian package, copy the four IDX files into ``fmnist-idx/`` of the checkout
(untracked, so they travel with the working tree)::

    mkdir -p fmnist-idx && cp /usr/share/datasets/fashion-mnist/*.gz fmnist-idx/
    python tools/gpu_fmnist.py                       # writes $OUT/fmnist-gpu64.* (or model_cards/results/)
    python tools/gpu_fmnist.py --device cpu --no-amp --models test_resnet --epochs 1 --img-size 32 --batch-size 64 \\
        --train-samples 256 --test-samples 200      # smoke run on a CPU
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # a checkout works without `pip install -e .`

from hybrid_zoo.benchmarks.gpu_fmnist import main  # noqa: E402
from hybrid_zoo.train.data import FASHION_MNIST_DIR, fashion_mnist_available  # noqa: E402

if __name__ == '__main__':
    argv = sys.argv[1:]
    if '--data-dir' not in argv and not fashion_mnist_available(FASHION_MNIST_DIR):
        argv += ['--data-dir', str(ROOT / 'fmnist-idx')]
    sys.exit(main(argv))
