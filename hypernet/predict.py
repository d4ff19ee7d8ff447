"""Predict: which method runs, its rows for the new tokens, and the whole new matrices.

A method estimates only the tokens the alignment left to predict; `assemble` puts its rows
together with the copied and special rows, and gives whatever a method left undefined the
mean of the base rows (counted in the report).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .align import Alignment, Setup
from .heuristics.mean import mean
from .heuristics.shift import AUTO_MAX_PARAMETERS, auto_nats, shift
from .hidden import mean_hidden
from .methods import MethodOptions, MethodSpec, get_method
from .network.store import find_hypernet

if TYPE_CHECKING:
    from .transplant import Progress, TransplantRequest


@dataclass
class Choice:
    method: str
    hypernet: str | None  # a folder or store name
    hypernet_name: str | None  # as the report names it
    why: str

    @property
    def spec(self) -> MethodSpec:
        return get_method(self.method)


def choose_method(request: TransplantRequest, setup: Setup) -> Choice:
    """The asked-for method; else hypernet+hybrid with the given hypernetwork or one trained
    for exactly this base model (fingerprint); else hybrid."""
    given = request.name("hypernet") if request.hypernet else None
    if request.method is not None:
        if get_method(request.method).hypernet:
            return Choice(request.method, request.hypernet, given, "asked for")
        return Choice(request.method, None, None, "asked for")
    if request.hypernet is not None:
        return Choice("hypernet+hybrid", request.hypernet, given, "a hypernetwork was given")
    found = find_hypernet(setup.fingerprint, request.hypernets)
    if found is None:
        return Choice("hybrid", None, None, "no hypernetwork was trained for this base model")
    why = f"hypernetwork {found.name!r} was trained for this base model (fingerprint matches)"
    return Choice("hypernet+hybrid", str(found), found.name, why)


def predict(
    setup: Setup, method: MethodSpec, options: MethodOptions, progress: Progress | None = None
) -> tuple[dict[str, Tensor], int]:
    """New matrices (same keys as `setup.matrices`) and how many rows fell back to a mean."""
    ctx = setup.context
    ctx.options = options
    ctx.progress = progress or (lambda stage, fraction: None)
    prediction = method.run(ctx)
    # A method defines predicted tokens, and copies where it gives rows for them (only the
    # hypernetwork's copied-rows mode does): those rows are kept as it predicted them.
    keep = prediction.defined
    specials = [i for i in setup.base_vocab.special_ids() if i < ctx.base_rows]
    out, fallbacks = {}, 0
    for name, matrix in setup.matrices.items():
        out[name] = prediction.rows(name, matrix)
        fallbacks = assemble(matrix, setup.alignment, out[name], keep, specials)
    todo = setup.alignment.predict
    if options.shift is None:  # resolved here, so the report says what ran
        options.shift = default_shift(method, len(todo), setup.ckpt.parameters)
    if options.shift and todo:
        head = "output" if "output" in out else "input"  # tied: the one matrix is the head
        mu = mean_hidden(setup.ckpt.path, setup.base_tok)
        out[head][todo] = shift(out[head][todo], mu, options.shift)
    return out, fallbacks


def default_shift(method: MethodSpec, predicted: int, parameters: int) -> float:
    """The method's own shift for this many predicted rows: 0 where it does not shift, and
    where the base model is too large to take its mean hidden state cheaply."""
    if not method.shift or parameters > AUTO_MAX_PARAMETERS:
        return 0.0
    return round(auto_nats(predicted), 3)


def assemble(
    base: Tensor, alignment: Alignment, rows: Tensor, keep: Tensor, special_ids: list[int]
) -> int:
    """Fill `rows` in place into the new matrix (a 262k-row matrix is held once): rows where
    `keep` is set stay as predicted; other copies and specials take their base row, unmatched
    specials and placeholders the mean of the base special rows, and predicted tokens
    without a prediction the mean of all base rows. Returns how many fell back to a mean
    (placeholders not counted)."""
    n_new, d = rows.shape
    assert base.ndim == 2 and base.shape[1] == d and keep.shape == (n_new,)
    todo = torch.zeros(n_new, dtype=torch.bool)
    todo[alignment.predict] = True
    rows[todo & ~keep] = mean(base, 1).to(rows.dtype)
    pairs = {i: j for i, j in {**alignment.copies, **alignment.specials}.items() if not keep[i]}
    rows[list(pairs)] = base[list(pairs.values())].to(rows.dtype)
    # Placeholders and specials without a counterpart: rows like the base model's special
    # tokens, which it has learnt to predict only where they belong.
    by_role = alignment.unmatched_specials + alignment.unused
    if by_role:
        pool = base[special_ids] if special_ids else base
        rows[by_role] = mean(pool, 1).to(rows.dtype)
    return int((todo & ~keep).sum()) + len(alignment.unmatched_specials)
