"""Run configurations and the constants both the command line and the library need, without torch or timm.

``import hybrid_zoo`` registers the models in timm, so every module under ``hybrid_zoo`` costs torch and timm to
import; ``hybrid-zoo --help`` must not. What the command line shows before anything runs (``TrainConfig`` and
``BenchConfig`` with the help text of each field, the embedded data cache folder, the deployment modes) therefore
lives here, in the standard library only. The library imports it (the trainer takes a ``TrainConfig``; ``python -m
hybrid_zoo.train`` parses its flags with the parser generated here), and so does ``hybrid_zoo_cli``; this package
imports neither.
"""
