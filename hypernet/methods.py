"""The method registry: each transplant method turns a `Context` into a `Prediction`.

A method only estimates the tokens in `ctx.alignment.predict`; copies and special tokens are
settled before any method runs, and whatever a method leaves undefined falls back to the mean
of the base rows (and is counted in the report). The hypernetwork's methods predict rows
directly instead of mixing base rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor

from .embedder import TextEmbedder, token_text
from .errors import InputError
from .heuristics import gaussian, hybrid, knn, omp, subword
from .heuristics.mixture import Mixture
from .network.predict import Predictor
from .vocab import Decomposer, Vocab

if TYPE_CHECKING:
    from .align import Alignment


@dataclass(frozen=True)
class _Bounds:
    """What an option accepts: its type and range (`above`: `low` itself is refused)."""

    kind: type
    low: float
    high: float
    above: bool = False
    optional: bool = False  # None is allowed too (it means: decided at run time)

    def check(self, name: str, value: object) -> object:
        """The value as the option holds it, or InputError naming option, value and range."""
        if value is None and self.optional:
            return None
        if not self.accepts(value):
            raise InputError(f"option {name}={value!r}: expected {self}")
        return float(value) if self.kind is float else value  # type: ignore[arg-type]

    def accepts(self, value: object) -> bool:
        types = (int, float) if self.kind is float else (self.kind,)
        if isinstance(value, bool) != (self.kind is bool) or not isinstance(value, types):
            return False
        if self.kind is bool:
            return True
        low_ok = value > self.low if self.above else value >= self.low  # type: ignore[operator]
        return math.isfinite(value) and low_ok and value <= self.high  # type: ignore[arg-type]

    def __str__(self) -> str:
        if self.kind is bool:
            return "true or false"
        what = "an integer" if self.kind is int else "a finite number"
        low = f"{'(' if self.above else '['}{_number(self.low)}"
        high = "inf)" if math.isinf(self.high) else f"{_number(self.high)}]"
        return f"{what} in {low}, {high}"


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _option(default: Any, kind: type, low: float = 0, high: float = 0, above: bool = False) -> Any:
    """A MethodOptions field with the bounds `from_dict` checks."""
    bounds = _Bounds(kind, low, high, above, optional=default is None)
    return field(default=default, metadata={"bounds": bounds})


INF = math.inf


@dataclass
class MethodOptions:
    """Knobs of the heuristics. Defaults were chosen on *.train.txt slices (bench/tune.py)."""

    # neighbours for the global estimate: more blurs, fewer is noisy
    k: int = _option(16, int, 1, 1024)
    # softmax temperature over neighbour cosines
    temperature: float = _option(0.05, float, 0, INF, above=True)
    # neighbours below this cosine say nothing about the token
    threshold: float = _option(0.3, float, -1, 1)
    # share of the global estimate in hybrid, where both exist
    weight: float = _option(0.4, float, 0, 1)
    # TokenAdapt's local softmax over piece similarity
    local_temperature: float = _option(3.0, float, 0, INF, above=True)
    # atoms per token for OMP through a donor
    omp_k: int = _option(8, int, 1, 256)
    # share of the global estimate in hypernet+hybrid (bench/tune.py)
    hypernet_weight: float = _option(0.1, float, 0, 1)
    # copied tokens take the network's rows; None: as trained
    hypernet_copied: bool | None = _option(None, bool)
    # lower the logits of predicted rows by about this many nats (heuristics/shift.py); None:
    # the method's default, by the number of predicted rows for `hybrid`, else 0
    shift: float | None = _option(None, float, 0, 20)
    # for the gaussian baseline
    seed: int = _option(0, int, 0, 2**63 - 1)

    @classmethod
    def from_dict(cls, options: dict) -> MethodOptions:
        """Options as a request gives them, checked: a job never fails on one later."""
        known = {f.name: f.metadata["bounds"] for f in fields(cls)}
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise InputError(f"unknown method option(s) {unknown}; known: {sorted(known)}")
        return cls(**{k: known[k].check(k, v) for k, v in options.items()})


class Prediction(Protocol):
    """Rows for some new tokens, for any of the base model's embedding matrices."""

    @property
    def defined(self) -> Tensor: ...  # [n_new] bool

    def rows(self, matrix: str, base: Tensor) -> Tensor:
        """[n_base, d] -> [n_new, d]: a new tensor, which the caller fills in place."""
        ...


class MixturePrediction:
    def __init__(self, mixture: Mixture) -> None:
        self.mixture = mixture

    @property
    def defined(self) -> Tensor:
        return self.mixture.defined

    def rows(self, matrix: str, base: Tensor) -> Tensor:
        return self.mixture.apply(base)


class GaussianPrediction:
    def __init__(self, mask: Tensor, seed: int) -> None:
        self.mask, self.seed = mask, seed

    @property
    def defined(self) -> Tensor:
        return self.mask

    def rows(self, matrix: str, base: Tensor) -> Tensor:
        return gaussian.gaussian(base, self.mask.shape[0], self.seed)


class RowsPrediction:
    """Rows predicted directly (by the hypernetwork), optionally blended with a mixture."""

    def __init__(
        self, rows: dict[str, Tensor], mask: Tensor, blend: Mixture | None = None, w: float = 0
    ) -> None:
        self.predicted, self.mask, self.blend, self.w = rows, mask, blend, w

    @property
    def defined(self) -> Tensor:
        return self.mask

    def rows(self, matrix: str, base: Tensor) -> Tensor:
        rows = self.predicted[matrix]
        if self.blend is None:
            return rows.to(base.dtype, copy=True)
        # (1 - w) * rows + w * blend where the blend is defined; its rows are zero elsewhere.
        # In place, so that large vocabularies hold two matrices here, not five.
        factor = torch.where(self.blend.defined, 1 - self.w, 1.0).unsqueeze(1)
        out = self.blend.apply(base).mul_(self.w).addcmul_(rows, factor)
        return out.to(base.dtype)


@dataclass
class Donor:
    """A model that already speaks the new tokenizer: its vocabulary and input embeddings."""

    vocab: Vocab
    embeddings: Tensor  # [donor rows, d']


class Context:
    """Everything a method may look at; expensive parts are computed on first use."""

    def __init__(
        self,
        base: Vocab,
        new: Vocab,
        alignment: Alignment,
        decomposer: Decomposer,
        base_rows: int,
        options: MethodOptions,
        embedder_path: Path | None = None,
        donor: Donor | None = None,
        progress: Callable[[str, float], None] | None = None,
        hypernet: Callable[[], Predictor] | None = None,
    ) -> None:
        self.base, self.new, self.alignment = base, new, alignment
        self.decomposer = decomposer
        self.base_rows = base_rows  # usable base rows: min(embedding rows, base vocab size)
        self.options = options
        self.embedder_path = embedder_path
        self.donor = donor
        self.progress = progress or (lambda stage, fraction: None)
        self.hypernet = hypernet  # loads the hypernetwork for this base model, on first use
        self._neighbours: tuple[int, list[tuple[Tensor, Tensor, Tensor, Tensor]]] | None = None

    @property
    def n_new(self) -> int:
        return len(self.new)

    @property
    def todo(self) -> Tensor:
        mask = torch.zeros(self.n_new, dtype=torch.bool)
        mask[self.alignment.predict] = True
        return mask

    @cached_property
    def pieces(self) -> dict[int, list[int]]:
        out = {}
        for i in self.alignment.predict:
            s = self.new.surfaces[i]
            assert s is not None
            out[i] = self.decomposer(s)
        return out

    @cached_property
    def predictor(self) -> Predictor:
        if self.hypernet is None:
            raise InputError("the hypernet methods need a hypernetwork")
        return self.hypernet()

    @cached_property
    def hypernet_rows(self) -> dict[str, Tensor]:
        """The hypernetwork's rows for every new token it predicts (zero elsewhere)."""
        ids = self.alignment.predict
        rows = self.predictor.predict([self.new.surfaces[i] for i in ids])  # type: ignore[misc]
        return {name: _scatter(r, ids, self.n_new) for name, r in rows.items()}

    @cached_property
    def hypernet_copy_rows(self) -> dict[str, Tensor]:
        """The hypernetwork's rows for the copied tokens (zero elsewhere)."""
        new_ids, base_ids = list(self.alignment.copies), list(self.alignment.copies.values())
        rows = self.predictor.predict_base(base_ids)
        return {name: _scatter(r, new_ids, self.n_new) for name, r in rows.items()}

    def hypernet_prediction(self) -> tuple[dict[str, Tensor], Tensor]:
        """Rows and where they are defined: predicted tokens, and copied ones too when the
        network was trained to correct copies (or `hypernet_copied` says so)."""
        o = self.options
        if o.hypernet_copied is None:  # resolved here, so the report says what ran
            o.hypernet_copied = bool(self.predictor.meta.recipe.get("copied_rows", False))
        if not o.hypernet_copied:
            return self.hypernet_rows, self.todo
        copied = torch.zeros(self.n_new, dtype=torch.bool)
        copied[list(self.alignment.copies)] = True
        rows = {k: v + self.hypernet_copy_rows[k] for k, v in self.hypernet_rows.items()}
        return rows, self.todo | copied

    @cached_property
    def embedder(self) -> TextEmbedder:
        return TextEmbedder(self.embedder_path)

    @cached_property
    def base_texts(self) -> dict[int, tuple[str, tuple[int, ...]]]:
        """Text and encoder pieces of each base token that has a row and that the encoder
        can read."""
        ids = [i for i in range(self.base_rows) if self.base.surfaces[i] is not None]
        texts = [token_text(self.base.surfaces[i]) for i in ids]  # type: ignore[arg-type]
        keys = self.embedder.keys(texts)
        return {i: (t, k) for i, t, k in zip(ids, texts, keys, strict=True) if k is not None}

    @cached_property
    def base_readings(self) -> tuple[dict[tuple[int, ...], int], Tensor]:
        """Each distinct encoder reading of the base tokens -> its row in the vectors, which
        embed one text per reading (tokens the encoder reads alike embed alike)."""
        text_of = {k: t for t, k in self.base_texts.values()}
        vectors = self.embedder.encode_cached(
            list(text_of.values()), lambda f: self.progress("embed base", f)
        )
        return {k: r for r, k in enumerate(text_of)}, vectors

    @cached_property
    def base_keys(self) -> tuple[Tensor, Tensor]:
        """Unit text embeddings of the readable base tokens: (ids [m], vectors [m, e])."""
        row, vectors = self.base_readings
        ids = torch.tensor(list(self.base_texts), dtype=torch.long)
        return ids, vectors[[row[k] for _, k in self.base_texts.values()]]

    @cached_property
    def piece_scores(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One entry per (new token, base piece): the new id, the piece's base id, their
        cosine in text-embedding space (0 where the encoder reads either as nothing), and
        the piece's length in bytes."""
        rows = torch.tensor([i for i, p in self.pieces.items() for _ in p], dtype=torch.long)
        cols = torch.tensor([j for p in self.pieces.values() for j in p], dtype=torch.long)
        query_ids, queries = self.new_queries
        key_ids, keys = self.base_keys
        q = torch.full((self.n_new,), -1, dtype=torch.long)
        q[query_ids] = torch.arange(len(query_ids))
        k = torch.full((self.base_rows,), -1, dtype=torch.long)
        k[key_ids] = torch.arange(len(key_ids))
        qr, kr = q[rows], k[cols]
        sims = torch.zeros(len(rows))
        chunk = 65536  # bounded memory: [chunk, e] at a time
        for start in range(0, len(rows) if len(queries) and len(keys) else 0, chunk):
            part = slice(start, start + chunk)
            dots = (queries[qr[part].clamp(min=0)] * keys[kr[part].clamp(min=0)]).sum(1)
            sims[part] = torch.where((qr[part] >= 0) & (kr[part] >= 0), dots, 0.0)
        size = torch.tensor([len(s or b"") for s in self.base.surfaces[: self.base_rows]])
        return rows, cols, sims, size[cols]

    def neighbours(self, k: int) -> list[tuple[Tensor, Tensor, Tensor, Tensor]]:
        """Top-k base neighbours of the new tokens, searched separately among word-initial and
        word-internal tokens: the embedder cannot tell " Haus" from "Haus", the model can.
        One search serves every smaller k: (sims, key positions, new ids, base ids) per part."""
        if self._neighbours is None or self._neighbours[0] < k:
            query_ids, queries = self.new_queries
            key_ids, keys = self.base_keys
            q_start = torch.tensor([_starts_word(self.new.surfaces[int(i)]) for i in query_ids])
            k_start = torch.tensor([_starts_word(self.base.surfaces[int(j)]) for j in key_ids])
            parts = []
            for flag in (True, False):
                qm, km = q_start == flag, k_start == flag
                sims, found = knn.search(queries[qm], keys[km], k)
                parts.append((sims, found, query_ids[qm], key_ids[km]))
            self._neighbours = (k, parts)
        return self._neighbours[1]

    @cached_property
    def new_queries(self) -> tuple[Tensor, Tensor]:
        """Unit text embeddings of the tokens to predict that the encoder can read. A token
        the encoder reads like some base token (" Haus", "haus") reuses that vector: only
        the rest is embedded."""
        ids = self.alignment.predict
        texts = [token_text(self.new.surfaces[i]) for i in ids]  # type: ignore[arg-type]
        keys = self.embedder.keys(texts)
        readable = [(i, k) for i, k in zip(ids, keys, strict=True) if k is not None]
        known, base_vectors = self.base_readings
        fresh = {k: t for t, k in zip(texts, keys, strict=True) if k is not None and k not in known}
        embedded = self.embedder.encode_cached(
            list(fresh.values()), lambda f: self.progress("embed new", f)
        )
        fresh_row = {k: r for r, k in enumerate(fresh)}
        reused = torch.tensor([k in known for _, k in readable], dtype=torch.bool)
        vectors = torch.empty(len(readable), base_vectors.shape[1])  # no concatenated copy
        vectors[reused] = base_vectors[[known[k] for _, k in readable if k in known]]
        vectors[~reused] = embedded[[fresh_row[k] for _, k in readable if k not in known]]
        return torch.tensor([i for i, _ in readable], dtype=torch.long), vectors


Method = Callable[[Context], Prediction]


@dataclass(frozen=True)
class MethodSpec:
    """A method and what a request must give it: the one place the CLI, the API's
    validation, `GET /methods` and `transplant()` learn what a method needs."""

    name: str
    run: Method
    summary: str  # one line, for `tokengraft methods` and `GET /methods`
    hypernet: bool = False  # needs a trained hypernetwork for the base model
    donor: bool = False  # needs a model that already speaks the new tokenizer
    embedder: bool = False  # reads a text-embedding model (the global heuristic)
    shift: bool = False  # shifts predicted rows by default (heuristics/shift.py: auto_nats)

    @property
    def needs(self) -> list[str]:
        return [n for n in ("hypernet", "donor", "embedder") if getattr(self, n)]

    def check(self, hypernet: bool, donor: bool) -> None:
        """Refuse a request that lacks what the method needs, or names a donor it ignores.
        The message names what is missing, never a flag: HTTP users have none."""
        if self.hypernet and not hypernet:
            raise InputError(f"method {self.name!r} needs a hypernetwork")
        if self.donor and not donor:
            raise InputError(
                f"method {self.name!r} needs a donor model (one that already uses the new "
                "tokenizer)"
            )
        if donor and not self.donor:
            raise InputError(f"a donor model is only used by {_donor_users()}, not {self.name!r}")


METHODS: dict[str, MethodSpec] = {}


def _donor_users() -> str:
    return "method " + ", ".join(repr(m.name) for m in METHODS.values() if m.donor)


def register(name: str, summary: str, **traits: bool) -> Callable[[Method], Method]:
    """Add a method with its MethodSpec flags: what it needs, and whether it shifts."""

    def wrap(fn: Method) -> Method:
        METHODS[name] = MethodSpec(name, fn, summary, **traits)
        return fn

    return wrap


def get_method(name: str) -> MethodSpec:
    if name not in METHODS:
        raise InputError(f"unknown method {name!r}; choose one of {', '.join(sorted(METHODS))}")
    return METHODS[name]


def _scatter(rows: Tensor, ids: list[int], n: int) -> Tensor:
    out = torch.zeros(n, rows.shape[1])
    out[ids] = rows
    return out


def _starts_word(surface: bytes | None) -> bool:
    return bool(surface) and surface[:1] in (b" ", b"\n", b"\t")  # type: ignore[index]


def local_weighted(ctx: Context) -> Mixture:
    """TokenAdapt's local estimate: pieces weighted by similarity to the whole token and length."""
    rows, cols, similarity, lengths = ctx.piece_scores
    return subword.weighted(
        rows, cols, similarity, lengths, ctx.n_new, ctx.base_rows, ctx.options.local_temperature
    )


def global_knn(ctx: Context) -> Mixture:
    """Nearest base tokens in text-embedding space (see `Context.neighbours`)."""
    o = ctx.options
    out = Mixture.empty(ctx.n_new, ctx.base_rows)
    for sims, found, query_ids, key_ids in ctx.neighbours(o.k):
        out = out + knn.mix(
            sims,
            found,
            query_ids,
            key_ids,
            ctx.n_new,
            ctx.base_rows,
            o.k,
            o.temperature,
            o.threshold,
        )
    return out


@register("mean", "Baseline: copies, and the mean of the base rows for every other token.")
def _mean(ctx: Context) -> Prediction:
    return MixturePrediction(Mixture.empty(ctx.n_new, ctx.base_rows))  # the fallback *is* the mean


@register("gaussian", "Baseline: draws from a normal fitted to the base rows.")
def _gaussian(ctx: Context) -> Prediction:
    return GaussianPrediction(ctx.todo, ctx.options.seed)


@register("subword", "Mean of the base pieces of each new token (FVT).")
def _subword(ctx: Context) -> Prediction:
    return MixturePrediction(subword.fvt(ctx.pieces, ctx.n_new, ctx.base_rows))


@register("subword-weighted", "Base pieces weighted by similarity and length (TokenAdapt local).")
def _subword_weighted(ctx: Context) -> Prediction:
    return MixturePrediction(local_weighted(ctx))


@register("knn", "Top-k similar base tokens in text-embedding space (global).", embedder=True)
def _knn(ctx: Context) -> Prediction:
    return MixturePrediction(global_knn(ctx))


@register(
    "hybrid", "(1 - w) * weighted local + w * global; the default.", embedder=True, shift=True
)
def _hybrid(ctx: Context) -> Prediction:
    mixture = hybrid.hybrid(local_weighted(ctx), global_knn(ctx), ctx.options.weight)
    return MixturePrediction(mixture)


@register("hypernet", "The trained hypernetwork.", hypernet=True)
def _hypernet(ctx: Context) -> Prediction:
    return RowsPrediction(*ctx.hypernet_prediction())


@register(
    "hypernet+hybrid",
    "(1 - w) * hypernetwork + w * global where the global estimate exists.",
    hypernet=True,
    embedder=True,
)
def _hypernet_hybrid(ctx: Context) -> Prediction:
    rows, mask = ctx.hypernet_prediction()
    return RowsPrediction(rows, mask, global_knn(ctx), ctx.options.hypernet_weight)


@register("omp", "OMP over shared tokens in a donor model's space.", donor=True)
def _omp(ctx: Context) -> Prediction:
    donor = ctx.donor
    assert donor is not None, "MethodSpec.check requires a donor for omp"
    donor_by_surface = donor.vocab.by_surface()
    n_donor = donor.embeddings.shape[0]

    def donor_id(i: int) -> int | None:
        j = donor_by_surface.get(ctx.new.surfaces[i])  # type: ignore[arg-type]
        return j if j is not None and j < n_donor else None

    shared = [(d, b) for n, b in ctx.alignment.copies.items() if (d := donor_id(n)) is not None]
    todo = [(n, d) for n in ctx.alignment.predict if (d := donor_id(n)) is not None]
    if not shared:
        raise InputError("the donor shares no tokens with the base model; OMP has nothing to use")
    shared_donor = torch.tensor([d for d, _ in shared])
    shared_base = torch.tensor([b for _, b in shared])
    new_ids = torch.tensor([n for n, _ in todo], dtype=torch.long)
    donor_rows = donor.embeddings[torch.tensor([d for _, d in todo], dtype=torch.long)]
    mixture = omp.omp_mixture(
        new_ids,
        donor_rows,
        donor.embeddings[shared_donor],
        shared_base,
        ctx.n_new,
        ctx.base_rows,
        ctx.options.omp_k,
    )
    return MixturePrediction(mixture)
