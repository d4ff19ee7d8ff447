"""Baseline: draws from the multivariate normal fitted to the base rows (Hewitt, 2021).

Better than zeros or a shared mean because the new rows keep the base rows' spread and
correlations, so the LM head does not favour them all at once.
"""

from __future__ import annotations

import torch
from torch import Tensor


def gaussian(base: Tensor, n: int, seed: int = 0) -> Tensor:
    """[n_base, d] -> [n, d] float32 samples of N(mean, cov) of the base rows."""
    assert base.ndim == 2 and base.shape[0] > 1
    x = base.float()
    mu = x.mean(dim=0)
    centred = x - mu
    cov = centred.T @ centred / (x.shape[0] - 1)
    cov += 1e-5 * torch.eye(x.shape[1]) * cov.diagonal().mean()  # keep it positive definite
    dist = torch.distributions.MultivariateNormal(mu, covariance_matrix=cov)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return dist.sample((n,))
    finally:
        torch.random.set_rng_state(generator_state)
