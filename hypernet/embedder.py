"""A text-embedding model for the global similarity heuristics (all-MiniLM-L6-v2 by default).

Token strings are embedded once and cached as safetensors under the cache root, keyed by the
embedder's content and the exact strings, so every job and worker sharing the cache embeds a
base vocabulary once and repeated transplants embed only what is new.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from functools import cached_property
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor
from transformers import AutoModel, AutoTokenizer

from .files import atomic_write
from .sources import bundled_embedder, cache_root

MAX_LENGTH = 32  # word pieces per token string; longer ones are rare and truncated
BATCH_POSITIONS = 4096  # positions per forward pass: large enough for fast matmuls
TOKENIZE_SLICE = 8192  # texts tokenized at once: their encodings weigh far more than the ids


class TextEmbedder:
    """Mean-pooled, unit-length sentence embeddings from a BERT-like encoder."""

    def __init__(self, path: Path | None = None, device: str | None = None) -> None:
        self.path = Path(path) if path else bundled_embedder()
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.model = AutoModel.from_pretrained(self.path).to(self.device).eval()

    @cached_property
    def identity(self) -> str:
        """Content hash of the embedder's files: equal models share cache entries wherever
        they are installed."""
        digest = hashlib.sha256()
        for file in sorted(self.path.iterdir()):
            if file.is_file() and file.suffix in (".json", ".safetensors", ".txt"):
                digest.update(file.name.encode() + b"\0" + file.read_bytes())
        return digest.hexdigest()

    def _ids(self, texts: list[str], special: bool) -> list[list[int]]:
        """Word-piece ids, with [CLS] and [SEP] when `special`, at most MAX_LENGTH in all."""
        ids: list[list[int]] = []
        for start in range(0, len(texts), TOKENIZE_SLICE):
            ids += self.tokenizer(
                texts[start : start + TOKENIZE_SLICE],
                add_special_tokens=special,
                truncation=True,
                max_length=MAX_LENGTH if special else MAX_LENGTH - 2,
                return_attention_mask=False,
                return_token_type_ids=False,
            )["input_ids"]
        return ids

    def keys(self, texts: list[str]) -> list[tuple[int, ...] | None]:
        """The word pieces the encoder reads for each text: texts with equal pieces embed
        alike (the encoder lowercases). None where it reads only unknown pieces (byte
        fragments, scripts it never learnt): its vector would say nothing about the text."""
        unknown = {self.tokenizer.unk_token_id}
        pieces = self._ids(texts, special=False)
        return [tuple(p) if set(p) - unknown else None for p in pieces]

    @torch.inference_mode()
    def encode(self, texts: list[str], progress: Callable[[float], None] | None = None) -> Tensor:
        """[len(texts), e] float32 on the CPU. Texts are batched by their exact length in word
        pieces, so no position is padding and no attention mask is needed."""
        out = torch.empty(len(texts), self.model.config.hidden_size)
        if not texts:
            return out
        ids = self._ids(texts, special=True)
        done = 0
        for batch in _equal_length_batches(ids, BATCH_POSITIONS):
            x = torch.tensor([ids[i] for i in batch], device=self.device)
            pooled = self.model(input_ids=x).last_hidden_state.mean(dim=1)
            out[batch] = torch.nn.functional.normalize(pooled, dim=-1).float().cpu()
            done += len(batch)
            if progress:
                progress(done / len(texts))
        return out

    def encode_cached(
        self, texts: list[str], progress: Callable[[float], None] | None = None
    ) -> Tensor:
        """Like `encode`, but each distinct text is embedded once and the result is cached."""
        digest = hashlib.sha256(self.identity.encode())
        for t in texts:
            digest.update(t.encode(errors="surrogatepass") + b"\0")
        file = cache_root() / "embeddings" / f"{digest.hexdigest()[:32]}.safetensors"
        if file.exists():
            return load_file(file)["embeddings"]
        unique = list(dict.fromkeys(texts))
        position = {t: i for i, t in enumerate(unique)}
        vectors = self.encode(unique, progress=progress)[[position[t] for t in texts]]
        with atomic_write(file) as tmp:
            save_file({"embeddings": vectors.contiguous()}, tmp)
        return vectors


def _equal_length_batches(ids: list[list[int]], positions: int) -> Iterator[list[int]]:
    """Indices of `ids` grouped by sequence length, at most `positions` positions a batch."""
    by_length: dict[int, list[int]] = {}
    for i, seq in enumerate(ids):
        by_length.setdefault(len(seq), []).append(i)
    for length, members in sorted(by_length.items()):
        step = max(1, positions // length)
        for start in range(0, len(members), step):
            yield members[start : start + step]


def token_text(surface: bytes) -> str:
    """What to embed for a token: its text, without the word-start space MiniLM ignores anyway."""
    return surface.decode(errors="replace").strip() or surface.decode(errors="replace")
