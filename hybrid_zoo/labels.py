"""Class names of the datasets the project ships (Fashion-MNIST from Debian, scikit-learn's digits): the one home
shared by the embedded datasets (``train.data``), the published tags' configs (``models.pretrained``) and the
benchmarks."""

from __future__ import annotations

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
DIGITS_CLASSES: tuple[str, ...] = tuple(str(i) for i in range(10))
