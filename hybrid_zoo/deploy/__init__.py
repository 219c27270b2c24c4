"""Deployment tier (``pip install 'hybrid_zoo[export]'``): a trained eval model in the forms users serve it in.

- ``fold``: BatchNorm and layer scales folded into convs (:func:`reparameterize`), and how ``torch.compile`` sees a
  model (:func:`graph_breaks`);
- ``onnx_export``: ONNX with dynamic batch, height and width (:func:`export_onnx`), an ONNX Runtime session
  (:func:`ort_session`) and parity with eager (:func:`onnx_max_abs_diff`);
- ``int8``: ONNX Runtime static quantization (:func:`quantize_onnx`) and PyTorch's PT2E flow (:func:`pt2e_int8`),
  both calibrated on batches the caller provides;
- ``modes``: one entry point, :func:`build`, for every mode in :data:`MODES`, each checked against eager.

Nothing here reads a dataset or measures accuracy: the caller brings calibration batches and prices a deployed form
with the trainer's evaluation (``hybrid_zoo.train.evaluate.compare_accuracy``), as ``hybrid-zoo export`` does.
"""

from .errors import DeployError
from .fold import graph_breaks, reparameterize
from .int8 import has_vnni, input_convs, pt2e_int8, quantize_onnx, three_channel_copy
from .modes import MODES, Deployed, build
from .onnx_export import PARITY_SHAPES, export_onnx, onnx_max_abs_diff, ort_session

__all__ = [
    'MODES',
    'PARITY_SHAPES',
    'DeployError',
    'Deployed',
    'build',
    'export_onnx',
    'graph_breaks',
    'has_vnni',
    'onnx_max_abs_diff',
    'ort_session',
    'pt2e_int8',
    'quantize_onnx',
    'reparameterize',
    'input_convs',
    'three_channel_copy',
]
