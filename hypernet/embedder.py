"""A text-embedding model for the global similarity heuristics (all-MiniLM-L6-v2 by default).

Token strings are embedded once per vocabulary and cached as safetensors under the cache root,
keyed by the embedder and the exact strings, so repeated transplants from one base model only
embed the new vocabulary.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor
from transformers import AutoModel, AutoTokenizer

from .models import bundled_embedder, cache_root


class TextEmbedder:
    """Mean-pooled, unit-length sentence embeddings from a BERT-like encoder."""

    def __init__(self, path: Path | None = None, device: str | None = None) -> None:
        self.path = Path(path) if path else bundled_embedder()
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.model = AutoModel.from_pretrained(self.path).to(self.device).eval()

    @torch.inference_mode()
    def encode(
        self,
        texts: list[str],
        batch_size: int = 512,
        progress: Callable[[float], None] | None = None,
    ) -> Tensor:
        """[len(texts), e] float32 on the CPU. Sorted by length so batches pad little."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = torch.empty(len(texts), self.model.config.hidden_size)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = self.tokenizer(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=32,
                return_tensors="pt",
            ).to(self.device)
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            out[idx] = torch.nn.functional.normalize(pooled, dim=-1).float().cpu()
            if progress:
                progress(min(1.0, (start + batch_size) / len(order)))
        return out

    def encode_cached(
        self, texts: list[str], progress: Callable[[float], None] | None = None
    ) -> Tensor:
        """Like `encode`, but each distinct text is embedded once and the result is cached."""
        digest = hashlib.sha256(str(self.path.resolve()).encode())
        for t in texts:
            digest.update(t.encode(errors="surrogatepass") + b"\0")
        file = cache_root() / "embeddings" / f"{digest.hexdigest()[:32]}.safetensors"
        if file.exists():
            return load_file(file)["embeddings"]
        unique = list(dict.fromkeys(texts))
        position = {t: i for i, t in enumerate(unique)}
        vectors = self.encode(unique, progress=progress)[[position[t] for t in texts]]
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_suffix(f".tmp{id(vectors)}")
        save_file({"embeddings": vectors.contiguous()}, tmp)
        tmp.replace(file)
        return vectors


def token_text(surface: bytes) -> str:
    """What to embed for a token: its text, without the word-start space MiniLM ignores anyway."""
    return surface.decode(errors="replace").strip() or surface.decode(errors="replace")
