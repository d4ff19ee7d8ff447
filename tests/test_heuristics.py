from __future__ import annotations

import pytest
import torch

from hypernet.heuristics import gaussian, hybrid, knn, mean, omp, shift, subword
from hypernet.heuristics.mixture import Mixture


@pytest.fixture
def base() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(10, 4)


def test_one_hot_takes_rows_verbatim(base: torch.Tensor) -> None:
    rows = Mixture.one_hot({0: 3, 2: 7}, n_new=3, n_base=10).apply(base)
    assert rows.shape == (3, 4)
    assert torch.equal(rows[0], base[3]) and torch.equal(rows[2], base[7])
    assert torch.equal(rows[1], torch.zeros(4))


def test_mixture_checks_shapes(base: torch.Tensor) -> None:
    m = Mixture.one_hot({0: 3}, n_new=2, n_base=10)
    with pytest.raises(AssertionError):
        m.apply(base[:5])
    with pytest.raises(AssertionError):
        Mixture.one_hot({5: 0}, n_new=2, n_base=10)


def test_fvt_is_the_mean_of_pieces(base: torch.Tensor) -> None:
    m = subword.fvt({0: [1, 2, 3], 1: [], 2: [4]}, n_new=3, n_base=10)
    rows = m.apply(base)
    assert torch.allclose(rows[0], base[[1, 2, 3]].mean(0))
    assert torch.allclose(rows[2], base[4])
    assert m.defined.tolist() == [True, False, True]


def test_weighted_prefers_similar_and_longer_pieces(base: torch.Tensor) -> None:
    rows, cols = torch.tensor([0, 0, 1]), torch.tensor([1, 2, 5])
    sims, lengths = torch.tensor([0.9, 0.1, 0.0]), torch.tensor([3, 3, 2])
    m = subword.weighted(rows, cols, sims, lengths, 2, 10, temperature=0.1)
    w = m.weights.tolist()
    assert w[0] > 0.99 and abs(w[0] + w[1] - 1) < 1e-6
    assert w[2] == pytest.approx(1.0)  # one piece: all of it, whatever its score
    sims, lengths = torch.tensor([0.5, 0.5, 0.0]), torch.tensor([1, 3, 2])
    m = subword.weighted(rows, cols, sims, lengths, 2, 10, temperature=1.0)
    assert m.weights.tolist() == pytest.approx([0.25, 0.75, 1.0])


def test_knn_finds_the_nearest_key_and_respects_threshold() -> None:
    keys = torch.nn.functional.normalize(torch.eye(4)[:3] + 0.01, dim=1)
    queries = torch.nn.functional.normalize(torch.tensor([[1.0, 0.05, 0, 0], [0, 0, 0, 1.0]]))
    sims, found = knn.search(queries, keys, k=2)
    assert found[0, 0] == 0 and sims.shape == (2, 2)
    m = knn.mix(
        sims,
        found,
        torch.tensor([5, 6]),
        torch.tensor([7, 8, 9]),
        n_new=7,
        n_base=10,
        k=2,
        temperature=0.01,
        threshold=0.5,
    )
    assert m.defined.nonzero().flatten().tolist() == [5]  # query 6 has no key above 0.5
    assert m.cols.tolist() == [7] and m.weights.tolist() == pytest.approx([1.0])


def test_hybrid_mixes_where_both_exist_and_falls_back(base: torch.Tensor) -> None:
    local = Mixture.one_hot({0: 1, 1: 2}, 3, 10)
    global_ = Mixture.one_hot({0: 3, 2: 4}, 3, 10)
    rows = hybrid.hybrid(local, global_, w=0.25).apply(base)
    assert torch.allclose(rows[0], 0.75 * base[1] + 0.25 * base[3])
    assert torch.allclose(rows[1], base[2]) and torch.allclose(rows[2], base[4])


def test_mean_and_gaussian_baselines(base: torch.Tensor) -> None:
    assert torch.allclose(mean.mean(base, 3), base.mean(0).expand(3, 4))
    big = torch.randn(5000, 3) @ torch.tensor([[2.0, 0, 0], [1, 1, 0], [0, 0, 0.5]]) + 3
    draws = gaussian.gaussian(big, 20000, seed=1)
    assert draws.shape == (20000, 3)
    assert torch.allclose(draws.mean(0), big.mean(0), atol=0.1)
    assert torch.allclose(torch.cov(draws.T), torch.cov(big.T), atol=0.15)
    assert torch.equal(draws, gaussian.gaussian(big, 20000, seed=1))


def test_omp_recovers_a_sparse_combination() -> None:
    torch.manual_seed(0)
    dictionary = torch.randn(50, 16)
    target = 2.0 * dictionary[3] - 0.5 * dictionary[17]
    chosen, coefs = omp.omp(target.unsqueeze(0), dictionary, k=2)
    assert sorted(chosen[0].tolist()) == [3, 17]
    got = dict(zip(chosen[0].tolist(), coefs[0].tolist(), strict=True))
    assert got[3] == pytest.approx(2.0, abs=1e-4) and got[17] == pytest.approx(-0.5, abs=1e-4)


def test_omp_mixture_applies_donor_coefficients_to_base_rows() -> None:
    torch.manual_seed(0)
    donor_shared = torch.randn(20, 64)
    base = torch.randn(30, 5)
    shared_base_ids = torch.arange(10, 30)
    donor_new = (donor_shared[2] + donor_shared[5]).unsqueeze(0)
    m = omp.omp_mixture(torch.tensor([1]), donor_new, donor_shared, shared_base_ids, 2, 30, k=2)
    rows = m.apply(base)
    assert torch.allclose(rows[1], base[12] + base[15], atol=1e-4)


def test_shift_lowers_the_logit_by_nats_at_the_mean_state_and_only_along_it(
    base: torch.Tensor,
) -> None:
    mu = torch.tensor([1.0, 2.0, 0.0, -1.0])
    moved = shift.shift(base, mu, 1.5)
    assert torch.allclose(moved @ mu, base @ mu - 1.5)
    across = torch.tensor([2.0, -1.0, 5.0, 0.0])  # orthogonal to mu: its logits do not move
    assert torch.allclose(moved @ across, base @ across)
    assert torch.equal(shift.shift(base, mu, 0.0), base)
    with pytest.raises(AssertionError):
        shift.shift(base, mu[:3], 1.0)


def test_the_default_shift_is_zero_for_look_alikes_and_grows_with_predicted_rows() -> None:
    assert shift.auto_nats(0) == 0.0
    assert shift.auto_nats(26_071) == 0.0  # a German 32k look-alike
    assert shift.auto_nats(88_690) == pytest.approx(1.0839, abs=1e-4)  # Llama-3
    assert shift.auto_nats(209_640) == pytest.approx(1.9442, abs=1e-4)  # Gemma3
