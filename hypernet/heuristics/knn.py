"""Global estimate: the base tokens nearest to a new token in a text-embedding space.

FAISS exact inner-product search over unit vectors (cosine), on the GPU when faiss has one.
Neighbours below `threshold` are dropped; the rest are mixed by softmax(similarity / T).
A new token with no neighbour above the threshold stays undefined.
"""

from __future__ import annotations

import faiss
import numpy as np
import torch
from torch import Tensor

from .mixture import Mixture


def _index(dim: int) -> faiss.Index:
    index = faiss.IndexFlatIP(dim)
    if torch.cuda.is_available() and hasattr(faiss, "StandardGpuResources"):
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    return index


def knn(
    queries: Tensor,
    query_ids: Tensor,
    keys: Tensor,
    key_ids: Tensor,
    n_new: int,
    n_base: int,
    k: int,
    temperature: float,
    threshold: float,
) -> Mixture:
    """queries [n, e] for new ids query_ids [n]; keys [m, e] for base ids key_ids [m]."""
    assert queries.ndim == keys.ndim == 2 and queries.shape[1] == keys.shape[1]
    assert query_ids.shape == (queries.shape[0],) and key_ids.shape == (keys.shape[0],)
    assert k >= 1 and temperature > 0
    if queries.shape[0] == 0 or keys.shape[0] == 0:
        return Mixture.empty(n_new, n_base)
    index = _index(keys.shape[1])
    index.add(np.ascontiguousarray(keys.float().numpy()))
    sims, found = index.search(np.ascontiguousarray(queries.float().numpy()), min(k, len(keys)))
    sims_t, found_t = torch.from_numpy(sims), torch.from_numpy(found)
    keep = (sims_t >= threshold) & (found_t >= 0)
    logits = torch.where(keep, sims_t / temperature, torch.full_like(sims_t, -torch.inf))
    any_kept = keep.any(dim=1)
    weights = torch.softmax(logits[any_kept], dim=1)
    rows = query_ids[any_kept].unsqueeze(1).expand_as(weights)
    cols = key_ids[found_t[any_kept].clamp(min=0)]
    nonzero = keep[any_kept]
    return Mixture(n_new, n_base, rows[nonzero], cols[nonzero], weights[nonzero].float())
