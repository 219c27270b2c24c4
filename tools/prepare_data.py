"""Write Fashion-MNIST / scikit-learn digits as Hugging Face datasets on disk (same as ``hybrid-zoo prepare-data``)."""

import sys

from hybrid_zoo.train.data import main

if __name__ == '__main__':
    sys.exit(main())
