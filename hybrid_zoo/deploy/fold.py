"""The folded eager form, and how ``torch.compile`` sees a model."""

from __future__ import annotations

import torch
import torch._dynamo
from timm.models import reparameterize_model
from torch import nn


def reparameterize(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with BatchNorm and layer scales folded into convs (timm's ``reparameterize_model``)."""
    return reparameterize_model(model.eval(), inplace=False)


def graph_breaks(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """(graph count, graph break count) of ``torch.compile`` on ``model(x)``, from ``torch._dynamo.explain``."""
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(model)(x)
    return explanation.graph_count, explanation.graph_break_count
