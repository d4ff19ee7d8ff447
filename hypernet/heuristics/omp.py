"""Orthogonal matching pursuit through a donor model (as in mergekit's tokensurgeon).

A donor model that already speaks the new tokenizer knows how a new token relates to the
tokens both vocabularies share. OMP expresses the donor's row for the new token as a sparse
combination of the donor's rows of shared tokens; the same coefficients applied to the base
model's rows of those shared tokens give the base-space estimate.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .mixture import Mixture


def omp(targets: Tensor, dictionary: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Batched OMP: targets [n, d], dictionary [s, d] -> (atom indices [n, k], coefs [n, k])."""
    assert targets.ndim == dictionary.ndim == 2 and targets.shape[1] == dictionary.shape[1]
    k = min(k, dictionary.shape[0])
    x, atoms = targets.double(), dictionary.double()
    norms = atoms.norm(dim=1).clamp(min=1e-12)
    n = x.shape[0]
    chosen = torch.zeros(n, 0, dtype=torch.long)
    coefs = torch.zeros(n, 0, dtype=torch.float64)
    residual = x
    for _ in range(k):
        scores = (residual @ atoms.T).abs() / norms
        scores.scatter_(1, chosen, -1.0)  # never pick an atom twice
        chosen = torch.cat([chosen, scores.argmax(dim=1, keepdim=True)], dim=1)
        basis = atoms[chosen]  # [n, j, d]
        coefs = torch.linalg.lstsq(basis.transpose(1, 2), x.unsqueeze(2)).solution.squeeze(2)
        residual = x - torch.einsum("nj,njd->nd", coefs, basis)
    return chosen, coefs.float()


def omp_mixture(
    new_ids: Tensor,
    donor_rows: Tensor,
    shared_donor_rows: Tensor,
    shared_base_ids: Tensor,
    n_new: int,
    n_base: int,
    k: int,
    batch: int = 1024,
) -> Mixture:
    """donor_rows [n, d'] for new_ids [n]; shared_donor_rows [s, d'] for shared_base_ids [s]."""
    assert donor_rows.shape[0] == new_ids.shape[0]
    assert shared_donor_rows.shape[0] == shared_base_ids.shape[0] > 0
    parts = [Mixture.empty(n_new, n_base)]
    for start in range(0, len(new_ids), batch):
        chosen, coefs = omp(donor_rows[start : start + batch], shared_donor_rows, k)
        rows = new_ids[start : start + batch].unsqueeze(1).expand_as(chosen)
        parts.append(
            Mixture(
                n_new, n_base, rows.flatten(), shared_base_ids[chosen].flatten(), coefs.flatten()
            )
        )
    out = parts[0]
    for part in parts[1:]:
        out = out + part
    return out
