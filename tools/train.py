"""Train or fine-tune a timm model on a Hugging Face dataset (same as ``hybrid-zoo train``).

python tools/train.py --model convformer_tiny --dataset data/fashion_mnist --img-size 32 --in-chans 1
accelerate launch [--multi_gpu --num_processes N] tools/train.py ...
"""

import sys

from hybrid_zoo.train.loop import main

if __name__ == '__main__':
    sys.exit(main())
