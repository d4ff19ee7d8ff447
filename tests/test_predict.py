"""Predict: which method runs by default, and the shift a method applies unless asked."""

from __future__ import annotations

import pytest

from hypernet.heuristics.shift import AUTO_MAX_PARAMETERS
from hypernet.methods import get_method
from hypernet.predict import default_shift


def test_only_hybrid_shifts_by_default() -> None:
    assert default_shift(get_method("hybrid"), 88_690, 135_000_000) == pytest.approx(1.084)
    for name in ("hypernet+hybrid", "subword", "knn", "mean"):
        assert default_shift(get_method(name), 88_690, 135_000_000) == 0.0


def test_a_model_too_large_to_sample_is_not_shifted_by_default() -> None:
    hybrid = get_method("hybrid")
    assert default_shift(hybrid, 88_690, AUTO_MAX_PARAMETERS) > 1.0
    assert default_shift(hybrid, 88_690, AUTO_MAX_PARAMETERS + 1) == 0.0
