"""Shift: predicted rows moved against the base model's mean hidden state, lowering their logits.

Every predicted row competes in every next-token softmax. Rows mixed from base rows sit nearer
the middle of the logits than real tokens' rows do, and a target of another family predicts tens
of thousands of them (88,690 of Llama-3's 128,256 onto SmolLM2): together they take probability
from the tokens the model knows. `row - nats * mu / |mu|^2`, with `mu` the mean final hidden
state, lowers the row's logit by `nats` in the average context and changes it along that one
direction only (bench/predicted_rows.py).
"""

from __future__ import annotations

from torch import Tensor


def shift(rows: Tensor, mu: Tensor, nats: float) -> Tensor:
    """[n, d] rows, [d] mean hidden state -> [n, d] rows whose mean logit is `nats` lower."""
    assert rows.ndim == 2 and mu.shape == (rows.shape[1],) and nats >= 0
    mu = mu.to(rows.dtype)
    return rows - nats * mu / mu.dot(mu)
