"""A trained hypernetwork bound to its base model: token strings in, embedding rows out.

The building block for the `hypernet` transplant methods and for dynamic tokenization, where a
tokenizer grows or changes per request and only the new tokens' rows are needed.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

from .errors import InputError
from .io import open_checkpoint
from .model import CONFIG, HyperNet, Saved, load, pad_pieces
from .models import cache_root, load_tokenizer, resolve_model
from .vocab import Decomposer, load_vocab


def architecture(config: dict) -> str:
    """The name a hypernetwork's fingerprint records for a model's config.json."""
    return (config.get("architectures") or [config.get("model_type", "unknown")])[0]


def store() -> Path:
    """Where hypernetworks are found by name: `$TOKENGRAFT_HYPERNETS`, else under the cache."""
    return Path(os.environ.get("TOKENGRAFT_HYPERNETS") or cache_root() / "hypernets")


def resolve_hypernet(name: str | Path) -> Path:
    """A hypernetwork folder, given as a path or as a name in the store."""
    for folder in (Path(name), store() / str(name)):
        if (folder / CONFIG).is_file():
            return folder
    raise InputError(f"no hypernetwork {str(name)!r}: not a folder with {CONFIG}, nor in {store()}")


def list_hypernets(roots: list[Path]) -> list[Path]:
    """Hypernetwork folders directly inside the given folders."""
    found = []
    for root in roots:
        if root.is_dir():
            found += sorted(p for p in root.iterdir() if (p / CONFIG).is_file())
    return found


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
        spellings = [self.decomposer.spell(s) for s in surfaces]
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
