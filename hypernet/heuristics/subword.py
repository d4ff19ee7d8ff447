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
    pieces: dict[int, list[int]],
    similarity: dict[int, Tensor],
    lengths: dict[int, Tensor],
    n_new: int,
    n_base: int,
    temperature: float,
) -> Mixture:
    """similarity[i][k]: cosine of new token i and its k-th piece; lengths[i][k]: piece bytes."""
    assert temperature > 0
    entries: dict[int, tuple[list[int], list[float]]] = {}
    for i, p in pieces.items():
        if not p:
            continue
        sim, length = similarity[i], lengths[i]
        assert sim.shape == length.shape == (len(p),), f"token {i}: pieces and scores differ"
        logits = sim / temperature + torch.log(length.clamp(min=1).float())
        entries[i] = (p, torch.softmax(logits, dim=0).tolist())
    return Mixture.from_dict(entries, n_new, n_base)
