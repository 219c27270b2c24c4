"""The deployment modes (``hybrid_zoo.deploy.build``), named here so ``hybrid-zoo bench --help`` lists them without
importing torch."""

MODES = ('eager', 'compiled', 'onnxruntime', 'int8', 'int8-pt2e')
