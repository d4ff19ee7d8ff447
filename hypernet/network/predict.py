"""A trained hypernetwork bound to its base model: token strings in, embedding rows out.

The building block for the `hypernet` transplant methods and for dynamic tokenization, where a
tokenizer grows or changes per request and only the new tokens' rows are needed.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from ..errors import InputError
from ..io import open_checkpoint
from ..sources import load_tokenizer, resolve_model
from ..vocab import Decomposer, load_vocab
from .model import HyperNet, Saved, architecture, load, pad_pieces
from .store import resolve_hypernet


class Predictor:
    def __init__(self, net: HyperNet, meta: Saved, decomposer: Decomposer) -> None:
        self.net, self.meta, self.decomposer = net, meta, decomposer

    @classmethod
    def open(cls, hypernet: str | Path, model: str) -> Predictor:
        """Load the hypernetwork and the base model's tokenizer and embedding rows."""
        model_dir = resolve_model(model)
        ckpt = open_checkpoint(model_dir)
        tokenizer = load_tokenizer(model_dir)
        vocab = load_vocab(tokenizer)
        matrices = ckpt.embeddings(len(vocab))
        decomposer = Decomposer(tokenizer, vocab, matrices["input"].shape[0])
        return cls.on_rows(hypernet, architecture(ckpt.config), matrices, decomposer)

    @classmethod
    def on_rows(
        cls, hypernet: str | Path, arch: str, matrices: dict[str, Tensor], decomposer: Decomposer
    ) -> Predictor:
        """Load onto base rows already in memory (a transplant has them)."""
        inp = matrices["input"].to(torch.float32)
        out = matrices["output"].to(torch.float32) if "output" in matrices else None
        net, meta = load(resolve_hypernet(hypernet), arch, inp, out)
        return cls(net, meta, decomposer)

    @torch.no_grad()
    def predict(self, surfaces: list[bytes], batch: int = 4096) -> dict[str, Tensor]:
        """Rows for each surface form (bytes, leading space where the token starts a word):
        {"input": [n, d]} and, for untied models, {"output": [n, d]}."""
        if any(not s for s in surfaces):
            raise InputError("cannot predict a row for an empty token")
        return self._rows([self.decomposer.spell(s) for s in surfaces], batch)

    @torch.no_grad()
    def predict_base(self, ids: list[int], batch: int = 4096) -> dict[str, Tensor]:
        """Rows for tokens the base vocabulary has, spelled as themselves: the copy plus the
        correction a network trained with copied rows learned (the copy itself otherwise)."""
        return self._rows([[i] for i in ids], batch)

    def _rows(self, spellings: list[list[int]], batch: int) -> dict[str, Tensor]:
        parts = []
        for start in range(0, len(spellings), batch):
            pieces = pad_pieces(spellings[start : start + batch], self.net.config.max_pieces)
            parts.append(self.net(pieces))
        names = list(self.net.heads)
        if not parts:
            return {name: torch.empty(0, self.net.config.dim) for name in names}
        return {name: torch.cat([p[name] for p in parts]) for name in names}


def predict_embeddings(hypernet: str | Path, model: str, tokens: list[str]) -> dict[str, Tensor]:
    """Embedding rows for arbitrary token strings (" Haus" starts a word), no transplant needed."""
    return Predictor.open(hypernet, model).predict([t.encode() for t in tokens])
