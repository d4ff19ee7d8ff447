from __future__ import annotations

import torch

from hypernet.heuristics.mixture import Mixture
from hypernet.methods import RowsPrediction


def test_rows_prediction_blends_only_where_the_global_estimate_exists() -> None:
    base = torch.arange(12, dtype=torch.float32).reshape(4, 3)
    predicted = {"input": torch.ones(3, 3)}
    mask = torch.tensor([True, True, False])
    blend = Mixture.from_dict({1: ([2, 3], [0.5, 0.5])}, 3, 4)  # says nothing about 0 and 2
    rows = RowsPrediction(predicted, mask, blend, 0.25).rows("input", base)
    assert torch.equal(rows[0], torch.ones(3))
    expected = 0.75 * torch.ones(3) + 0.25 * (base[2] + base[3]) / 2
    assert torch.allclose(rows[1], expected)
    assert torch.equal(RowsPrediction(predicted, mask).defined, mask)


def test_rows_prediction_follows_the_base_dtype() -> None:
    base = torch.zeros(4, 3, dtype=torch.bfloat16)
    rows = RowsPrediction({"input": torch.ones(2, 3)}, torch.ones(2, dtype=torch.bool))
    assert rows.rows("input", base).dtype == torch.bfloat16
