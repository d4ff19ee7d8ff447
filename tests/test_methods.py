from __future__ import annotations

import math
from dataclasses import asdict

import pytest
import torch

from hypernet.errors import InputError
from hypernet.heuristics.mixture import Mixture
from hypernet.methods import METHODS, MethodOptions, RowsPrediction, get_method


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


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"seed": "x"}, "seed='x': expected an integer"),
        ({"seed": -1}, "seed=-1: expected an integer in [0, "),
        ({"seed": 2**63}, "seed="),
        ({"shift": -0.5}, "shift=-0.5: expected a finite number in [0, 20]"),
        ({"k": True}, "k=True: expected an integer in [1, 1024]"),
        ({"k": 4.0}, "k=4.0: expected an integer"),
        ({"k": 0}, "k=0"),
        ({"omp_k": 257}, "omp_k=257: expected an integer in [1, 256]"),
        ({"local_temperature": "hot"}, "local_temperature='hot': expected a finite number in (0"),
        ({"local_temperature": 0}, "local_temperature=0"),
        ({"temperature": math.nan}, "temperature=nan"),
        ({"temperature": math.inf}, "temperature=inf"),
        ({"threshold": -1.5}, "threshold=-1.5: expected a finite number in [-1, 1]"),
        ({"weight": 1.01}, "weight=1.01"),
        ({"hypernet_weight": False}, "hypernet_weight=False"),
        ({"hypernet_copied": 1}, "hypernet_copied=1: expected true or false"),
        ({"hypernet_copied": "yes"}, "hypernet_copied='yes'"),
    ],
)
def test_options_of_the_wrong_type_or_range_are_input_errors(options: dict, expected: str) -> None:
    with pytest.raises(InputError) as caught:
        MethodOptions.from_dict(options)
    assert expected in str(caught.value)


def test_options_in_range_are_taken_and_ints_serve_as_floats() -> None:
    given = {
        "k": 1024,
        "temperature": 1,
        "threshold": -1,
        "weight": 0,
        "local_temperature": 0.5,
        "omp_k": 1,
        "hypernet_weight": 1,
        "hypernet_copied": True,
        "shift": 20,
        "seed": 2**63 - 1,
    }
    options = MethodOptions.from_dict(given)
    assert asdict(options) == given
    assert isinstance(options.temperature, float) and isinstance(options.k, int)
    assert MethodOptions.from_dict({"hypernet_copied": None}) == MethodOptions()
    with pytest.raises(InputError, match="unknown method option"):
        MethodOptions.from_dict({"kk": 1})


def test_each_method_says_what_it_needs() -> None:
    assert METHODS["hypernet+hybrid"].needs == ["hypernet", "embedder"]
    assert METHODS["omp"].needs == ["donor"]
    assert METHODS["subword"].needs == []
    assert all(spec.summary and "--" not in spec.summary for spec in METHODS.values())


@pytest.mark.parametrize(
    ("method", "hypernet", "donor", "expected"),
    [
        ("hypernet", False, False, "'hypernet' needs a hypernetwork"),
        ("omp", False, False, "'omp' needs a donor model"),
        ("hybrid", False, True, "only used by method 'omp', not 'hybrid'"),
    ],
)
def test_a_request_lacking_what_a_method_needs_is_refused_by_name(
    method: str, hypernet: bool, donor: bool, expected: str
) -> None:
    with pytest.raises(InputError, match=expected):
        get_method(method).check(hypernet=hypernet, donor=donor)


def test_a_request_with_what_a_method_needs_passes() -> None:
    get_method("hypernet").check(hypernet=True, donor=False)
    get_method("omp").check(hypernet=False, donor=True)
    with pytest.raises(InputError, match="unknown method 'nope'"):
        get_method("nope")
