"""``hybrid-zoo train``: the flags are ``TrainConfig``'s fields (``hybrid_zoo_config.train``), parsed and checked
before torch is imported, then one training process runs them (``hybrid_zoo.train.launch``)."""

from __future__ import annotations

from hybrid_zoo_config.train import build_parser, config_from_args

__all__ = ['build_parser', 'main']


def main(argv: list[str] | None = None) -> int:
    """Run ``hybrid-zoo train``: 0 when done, 2 (one line on stderr) for bad options, data or checkpoints."""
    cfg = config_from_args(argv)
    from hybrid_zoo.train.loop import launch

    return launch(cfg)
