"""A prediction as a sparse mixture of base rows: new_row[i] = sum_j W[i, j] * base_row[j].

Copying, subword averaging, nearest neighbours and OMP all say "this new token is this weighted
combination of those base tokens". Keeping that as a sparse matrix instead of rows means one
plan applies to the input embeddings and to an untied LM head alike, and combining methods
(hybrid) is arithmetic on weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Mixture:
    n_new: int
    n_base: int
    rows: Tensor  # [nnz] long: new ids
    cols: Tensor  # [nnz] long: base ids
    weights: Tensor  # [nnz] float32

    def __post_init__(self) -> None:
        assert self.rows.shape == self.cols.shape == self.weights.shape, "ragged mixture"
        assert self.rows.ndim == 1
        if self.rows.numel():
            assert int(self.rows.max()) < self.n_new and int(self.rows.min()) >= 0
            assert int(self.cols.max()) < self.n_base and int(self.cols.min()) >= 0

    @classmethod
    def empty(cls, n_new: int, n_base: int) -> Mixture:
        none = torch.zeros(0, dtype=torch.long)
        return cls(n_new, n_base, none, none.clone(), torch.zeros(0))

    @classmethod
    def from_dict(
        cls, entries: dict[int, tuple[list[int], list[float]]], n_new: int, n_base: int
    ) -> Mixture:
        """From {new id: ([base ids], [weights])}."""
        rows = [i for i, (cols, _) in entries.items() for _ in cols]
        cols = [j for cols, _ in entries.values() for j in cols]
        weights = [w for _, ws in entries.values() for w in ws]
        return cls(
            n_new,
            n_base,
            torch.tensor(rows, dtype=torch.long),
            torch.tensor(cols, dtype=torch.long),
            torch.tensor(weights, dtype=torch.float32),
        )

    @classmethod
    def one_hot(cls, pairs: dict[int, int], n_new: int, n_base: int) -> Mixture:
        """Each new id copies exactly one base row."""
        return cls.from_dict({i: ([j], [1.0]) for i, j in pairs.items()}, n_new, n_base)

    @property
    def defined(self) -> Tensor:
        """[n_new] bool: which new tokens this mixture says anything about."""
        mask = torch.zeros(self.n_new, dtype=torch.bool)
        mask[self.rows] = True
        return mask

    def restrict(self, mask: Tensor) -> Mixture:
        """Keep only the new tokens where mask is True."""
        assert mask.shape == (self.n_new,)
        keep = mask[self.rows]
        return Mixture(
            self.n_new, self.n_base, self.rows[keep], self.cols[keep], self.weights[keep]
        )

    def scale(self, factor: Tensor) -> Mixture:
        """Multiply each new token's weights by factor[new id]."""
        assert factor.shape == (self.n_new,)
        return Mixture(
            self.n_new, self.n_base, self.rows, self.cols, self.weights * factor[self.rows]
        )

    def __add__(self, other: Mixture) -> Mixture:
        assert (self.n_new, self.n_base) == (other.n_new, other.n_base)
        return Mixture(
            self.n_new,
            self.n_base,
            torch.cat([self.rows, other.rows]),
            torch.cat([self.cols, other.cols]),
            torch.cat([self.weights, other.weights]),
        )

    def apply(self, base: Tensor, chunk: int = 32768) -> Tensor:
        """[n_base, d] base rows -> [n_new, d] float32 rows (zeros where undefined).

        Summed `chunk` entries at a time: memory stays at the output plus [chunk, d], where a
        sparse matrix product held the output about twice over (262k x 576 rows: +1.1 GB)."""
        assert base.ndim == 2 and base.shape[0] == self.n_base, (
            f"mixture over {self.n_base} base rows applied to {tuple(base.shape)}"
        )
        out = torch.zeros(self.n_new, base.shape[1])
        for start in range(0, self.rows.numel(), chunk):
            part = slice(start, start + chunk)
            terms = base[self.cols[part]].float().mul_(self.weights[part].unsqueeze(1))
            out.index_add_(0, self.rows[part], terms)
        return out
