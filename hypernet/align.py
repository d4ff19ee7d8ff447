"""Align: which new tokens take a base row as is, and the aligned pair every method reads.

A new token whose surface form the base vocabulary has keeps that row; special tokens are
matched by spelling, then by role. Everything else is predicted. `Setup` holds the aligned
pair with the base rows it may use, so that benchmarks and tuning can try many methods and
options on one alignment without re-reading the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from torch import Tensor
from transformers import PreTrainedTokenizerFast

from .errors import InputError
from .io import Checkpoint
from .methods import Context, Donor, MethodOptions
from .network.model import Fingerprint, architecture
from .network.predict import Predictor
from .resolve import Inputs
from .vocab import ROLE_FALLBACKS, SPELLED_ROLES, Decomposer, Vocab, load_vocab


@dataclass
class Alignment:
    """Which new tokens take an existing row as is."""

    copies: dict[int, int]  # new id -> base id, same surface form
    specials: dict[int, int]  # new id -> base id, same role or spelling
    unmatched_specials: list[int]  # new special ids with no counterpart in the base model
    predict: list[int]  # new ids that need an embedding predicted
    unused: list[int] = field(default_factory=list)  # new reserved placeholders

    def summary(self, n_new: int) -> dict[str, float | int]:
        return {
            "new_vocab_size": n_new,
            "copied": len(self.copies),
            "specials_by_role": len(self.specials),
            "specials_unmatched": len(self.unmatched_specials),
            "unused": len(self.unused),
            "predicted": len(self.predict),
            "overlap": round(len(self.copies) / max(1, n_new), 4),
        }


def align(base: Vocab, new: Vocab, base_rows: int) -> Alignment:
    """Match new tokens to base tokens: by surface form, special tokens by spelling then role.

    `base_rows` is the number of embedding rows; base ids at or beyond it have no row to copy.
    A new token's text is looked up as the base model would read it: after the base
    tokenizer's normalizer (a lowercasing base copies "hello" for "Hello").
    """
    base_by_surface = {s: i for s, i in base.by_surface().items() if i < base_rows}
    copies: dict[int, int] = {}
    predict: list[int] = []
    for i, s in enumerate(new.surfaces):
        if s is None:
            continue
        j = base_by_surface.get(base.normalize(s))
        if j is None:
            predict.append(i)
        else:
            copies[i] = j
    base_special_by_token = {base.tokens[i]: i for i in base.special_roles if i < base_rows}
    # A token may hold a role by configuration (bos_token = "<|im_start|>") and another by its
    # well-known spelling (<|im_start|> opens a chat turn); both are worth matching on.
    base_by_role: dict[str, int] = {}
    for i, role in sorted(base.special_roles.items()):
        if i < base_rows:
            base_by_role.setdefault(role, i)
    for i in sorted(base.special_roles):
        if i < base_rows and base.tokens[i] in SPELLED_ROLES:
            base_by_role.setdefault(SPELLED_ROLES[base.tokens[i]], i)
    specials: dict[int, int] = {}
    unmatched: list[int] = []
    for i, role in sorted(new.special_roles.items()):
        spelled_role = SPELLED_ROLES.get(new.tokens[i])
        candidates = [role, spelled_role, ROLE_FALLBACKS.get(role)]
        j = base_special_by_token.get(new.tokens[i])
        for candidate in candidates:
            if j is None and candidate is not None:
                j = base_by_role.get(candidate)
        if j is None:
            unmatched.append(i)
        else:
            specials[i] = j
    # A special token whose role is unknown but whose spelling is ordinary text (e.g. an
    # added token "<code>") still has a surface form worth decomposing.
    for i in list(unmatched):
        if new.tokens[i].encode() in base_by_surface:
            specials[i] = base_by_surface[new.tokens[i].encode()]
            unmatched.remove(i)
    return Alignment(copies, specials, unmatched, predict, list(new.unused))


@dataclass
class Setup:
    """A base model and a new tokenizer, aligned: everything before a method runs."""

    inputs: Inputs
    base_vocab: Vocab
    new_vocab: Vocab
    alignment: Alignment
    matrices: dict[str, Tensor]  # "input" and, when untied, "output": usable base rows only
    embedder: Path | None = None
    hypernet: str | None = None  # a folder or store name, once a hypernet method is chosen

    @classmethod
    def of(cls, inputs: Inputs, embedder: Path | None = None, hypernet: str | None = None) -> Setup:
        base_vocab, new_vocab = load_vocab(inputs.base_tok), load_vocab(inputs.new_tok)
        matrices = inputs.ckpt.embeddings(len(base_vocab))
        # ids beyond the rows have nothing to copy
        alignment = align(base_vocab, new_vocab, matrices["input"].shape[0])
        return cls(inputs, base_vocab, new_vocab, alignment, matrices, embedder, hypernet)

    @classmethod
    def load(
        cls,
        model_dir: Path,
        new_tok: PreTrainedTokenizerFast,
        embedder: Path | None = None,
        donor: Donor | None = None,
        hypernet: str | None = None,
    ) -> Setup:
        """From a model folder and a loaded tokenizer, for callers that resolved them."""
        return cls.of(Inputs.open(model_dir, new_tok, donor), embedder, hypernet)

    @property
    def ckpt(self) -> Checkpoint:
        return self.inputs.ckpt

    @property
    def base_tok(self) -> PreTrainedTokenizerFast:
        return self.inputs.base_tok

    @property
    def new_tok(self) -> PreTrainedTokenizerFast:
        return self.inputs.new_tok

    @cached_property
    def fingerprint(self) -> Fingerprint:
        """What a hypernetwork trained for this base model records."""
        return Fingerprint.of(
            architecture(self.ckpt.config), self.matrices["input"], self.ckpt.tied
        )

    @cached_property
    def context(self) -> Context:
        """What a method reads; its costly parts (pieces, neighbours) are computed once."""
        base_rows = self.matrices["input"].shape[0]
        decomposer = Decomposer(self.base_tok, self.base_vocab, base_rows)
        hypernet = self.hypernet

        def predictor() -> Predictor:
            if hypernet is None:
                raise InputError("the hypernet methods need a hypernetwork")
            arch = architecture(self.ckpt.config)
            return Predictor.on_rows(hypernet, arch, self.matrices, decomposer)

        return Context(
            self.base_vocab,
            self.new_vocab,
            self.alignment,
            decomposer,
            base_rows,
            MethodOptions(),
            self.embedder,
            self.inputs.donor,
            hypernet=predictor,
        )
