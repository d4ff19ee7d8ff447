"""Hybrid: (1 - w) * local + w * global where both exist, whichever exists otherwise."""

from __future__ import annotations

import torch

from .mixture import Mixture


def hybrid(local: Mixture, global_: Mixture, w: float) -> Mixture:
    assert 0.0 <= w <= 1.0
    both = local.defined & global_.defined
    one = torch.ones(local.n_new)
    return local.scale(torch.where(both, 1.0 - w, one)) + global_.scale(torch.where(both, w, one))
