"""Benchmarks tier (``pip install 'hybrid_zoo[bench]'``): the lab, not the product.

``speed`` (the interleaved CPU/GPU speed benchmark: scheduler and worker) with ``speed_report`` (its summary,
targets and plot), ``profile`` (where the time goes), ``compare`` (one training recipe for several models on
Fashion-MNIST) and ``gpu_fmnist`` (its GPU protocol), ``model_stats`` (params and GMACs), ``results`` (where
results files live and what they record about the machine) and ``docs`` (README/docs blocks rendered from
the results files).
"""
