"""``hybrid-zoo demo``: the main job end to end on the embedded default data."""

from __future__ import annotations

import argparse
import math


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='hybrid-zoo demo', description='Build every model and check its I/O contract.')
    return p


def main(argv: list[str] | None = None) -> int:
    build_parser().parse_args(argv)
    import timm
    import torch

    import hybrid_zoo

    for name in hybrid_zoo.list_variants():
        model = timm.create_model(name, num_classes=10).eval()
        with torch.no_grad():
            for h, w in ((224, 224), (193, 250)):
                feats = model.forward_features(torch.randn(1, 3, h, w))
                assert feats.shape[-2:] == (math.ceil(h / 32), math.ceil(w / 32))
                assert model.forward_head(feats).shape == (1, 10)
        print(f'{name}: (1, 3, 224, 224) -> (1, 10) logits; features (1, {model.num_features}, 7, 7); ok')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
