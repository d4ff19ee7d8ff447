"""Local estimates from the base tokenizer's pieces of a new token's surface form.

`fvt`: the plain mean of the pieces (Fast Vocabulary Transfer). `weighted`: TokenAdapt's local
heuristic, which trusts pieces that mean what the whole token means (cosine similarity in an
auxiliary text-embedding space) and that cover more of it (piece length):
w_i = softmax(cos_i / T + log len_i).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .mixture import Mixture


def fvt(pieces: dict[int, list[int]], n_new: int, n_base: int) -> Mixture:
    """pieces: new id -> base ids it decomposes into (empty lists are left undefined)."""
    return Mixture.from_dict(
        {i: (p, [1.0 / len(p)] * len(p)) for i, p in pieces.items() if p}, n_new, n_base
    )


def weighted(
    rows: Tensor,
    cols: Tensor,
    similarity: Tensor,
    lengths: Tensor,
    n_new: int,
    n_base: int,
    temperature: float,
) -> Mixture:
    """One entry per (new token, piece): rows [p] new ids, cols [p] base ids of the pieces,
    similarity [p] cosine of token and piece, lengths [p] piece bytes. Softmax per new token."""
    assert rows.shape == cols.shape == similarity.shape == lengths.shape and rows.ndim == 1
    assert temperature > 0
    logits = similarity.float() / temperature + torch.log(lengths.clamp(min=1).float())
    top = torch.full((n_new,), -torch.inf).scatter_reduce(0, rows, logits, "amax")
    e = torch.exp(logits - top[rows])
    total = torch.zeros(n_new).index_add_(0, rows, e)
    return Mixture(n_new, n_base, rows, cols, e / total[rows])
