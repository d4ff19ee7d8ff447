"""Shift: predicted rows moved against the base model's mean hidden state, lowering their logits.

Every predicted row competes in every next-token softmax. Rows mixed from base rows sit nearer
the middle of the logits than real tokens' rows do, and a target of another family predicts tens
of thousands of them (88,690 of Llama-3's 128,256 onto SmolLM2): together they take probability
from the tokens the model knows. `row - nats * mu / |mu|^2`, with `mu` the mean final hidden
state, lowers the row's logit by `nats` in the average context and changes it along that one
direction only (bench/predicted_rows.py).

`hybrid` shifts by default, by `auto_nats`: chosen on the train tails of bench/predicted_rows.py,
where the best shift grew with the number of predicted rows (a German 32k look-alike, 26,071
rows: 0; Llama-3, 88,690: 1.5; Qwen3, 112,421: 1.5-2; Gemma3, 209,640: 2 or more) and the
curve is flat near its best. A trained network's rows are calibrated in training: a shift gains
them at most 0.007 there, so `hypernet*` methods do not shift unless asked.
"""

from __future__ import annotations

import math

from torch import Tensor

# predicted rows below which the default shift is 0: a look-alike vocabulary predicts fewer
REFERENCE_ROWS = 30_000
# the default shifts only models whose fp32 copy (4 bytes a parameter) is at most this large:
# the mean hidden state takes a forward pass of the whole base model
AUTO_MAX_PARAMETERS = 3 * 10**9


def shift(rows: Tensor, mu: Tensor, nats: float) -> Tensor:
    """[n, d] rows, [d] mean hidden state -> [n, d] rows whose mean logit is `nats` lower."""
    assert rows.ndim == 2 and mu.shape == (rows.shape[1],) and nats >= 0
    mu = mu.to(rows.dtype)
    return rows - nats * mu / mu.dot(mu)


def auto_nats(predicted: int) -> float:
    """The default shift for `predicted` rows: ln(predicted / REFERENCE_ROWS), at least 0."""
    return max(0.0, math.log(max(predicted, 1) / REFERENCE_ROWS))
