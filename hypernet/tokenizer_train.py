"""Train BPE, Unigram or WordPiece tokenizers, optionally as drop-in replacements for a model's.

With `like`, the new tokenizer keeps the base model's special tokens (same strings, first in the
vocabulary, in the base's order), its chat template and special-token settings, and its text
pipeline (normalizer, pre-tokenizer, decoder) when that pipeline suits the new kind:
- bpe and unigram keep the base pipeline unless the base is WordPiece (whose `##` decoder and
  BERT pre-tokenizer only make sense for WordPiece); then they use their own defaults;
- wordpiece keeps a WordPiece base's pipeline, and uses BERT's otherwise.
Byte-level pipelines start from all 256 byte symbols, so every text round-trips exactly.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from .errors import InputError
from .io import atomic_folder, require_absent
from .models import load_tokenizer
from .vocab import ROLE_ATTRIBUTES, detect_family

Kind = Literal["bpe", "unigram", "wordpiece"]
KINDS = ("bpe", "unigram", "wordpiece")
DEFAULT_SPECIALS: dict[str, dict[str, str]] = {
    "bpe": dict.fromkeys(("bos_token", "eos_token", "unk_token"), "<|endoftext|>"),
    "unigram": {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>"},
    "wordpiece": {
        "pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
        "mask_token": "[MASK]",
    },
}  # fmt: skip
CONFIG_KEYS = ("chat_template", "model_max_length", "clean_up_tokenization_spaces")


def _lines(corpus: list[Path], max_bytes: int | None) -> Iterator[list[str]]:
    """Batches of lines from the corpus files, stopping after `max_bytes` bytes."""
    seen = 0
    for file in corpus:
        with open(file, encoding="utf-8", errors="replace") as f:
            batch: list[str] = []
            for line in f:
                seen += len(line.encode())
                batch.append(line)
                if len(batch) == 1000:
                    yield batch
                    batch = []
                if max_bytes is not None and seen >= max_bytes:
                    break
            if batch:
                yield batch
        if max_bytes is not None and seen >= max_bytes:
            return


def _pipeline(kind: Kind, base: dict | None) -> dict[str, Any]:
    """normalizer / pre_tokenizer / decoder JSON for the new tokenizer (see module docstring)."""
    base_family = detect_family(base) if base else None
    keep = base is not None and ((kind == "wordpiece") == (base_family == "wordpiece"))
    if keep:
        assert base is not None
        return {k: base.get(k) for k in ("normalizer", "pre_tokenizer", "decoder")}
    if kind == "bpe":
        parts: tuple[Any, Any, Any] = (
            None,
            pre_tokenizers.ByteLevel(add_prefix_space=False),
            decoders.ByteLevel(),
        )
    elif kind == "unigram":
        parts = (normalizers.NFKC(), pre_tokenizers.Metaspace(), decoders.Metaspace())
    else:
        parts = (
            normalizers.BertNormalizer(lowercase=True),
            pre_tokenizers.BertPreTokenizer(),
            decoders.WordPiece(),
        )
    return {
        key: (json.loads(part.__getstate__()) if part is not None else None)
        for key, part in zip(("normalizer", "pre_tokenizer", "decoder"), parts, strict=True)
    }


def _empty_tokenizer(kind: Kind, pipeline: dict[str, Any], unk: str | None) -> Tokenizer:
    model: models.Model
    if kind == "bpe":
        model = models.BPE(unk_token=None)
    elif kind == "unigram":
        model = models.Unigram()
    else:
        model = models.WordPiece(unk_token=unk or "[UNK]")
    spec = json.loads(Tokenizer(model).to_str())
    spec.update(pipeline)
    return Tokenizer.from_str(json.dumps(spec))


def _remap_ids(node: Any, tok: Tokenizer) -> Any:
    """Rewrite a post-processor's special-token ids for the new vocabulary."""
    if isinstance(node, dict):
        out = {k: _remap_ids(v, tok) for k, v in node.items()}
        if isinstance(out.get("tokens"), list) and isinstance(out.get("ids"), list):
            out["ids"] = [tok.token_to_id(t) for t in out["tokens"]]
        return out
    if isinstance(node, list):
        if len(node) == 2 and isinstance(node[0], str) and isinstance(node[1], int):
            return [node[0], tok.token_to_id(node[0])]  # RobertaProcessing's (token, id)
        return [_remap_ids(v, tok) for v in node]
    return node


def train_tokenizer(
    corpus: list[Path],
    kind: Kind,
    vocab_size: int,
    out: Path,
    like: Path | None = None,
    max_bytes: int | None = None,
    progress: bool = False,
) -> Path:
    """Train a tokenizer on `corpus` and save it (tokenizer.json + config) to `out`."""
    if kind not in KINDS:
        raise InputError(f"unknown tokenizer kind {kind!r}; choose one of {', '.join(KINDS)}")
    require_absent(out)
    for file in corpus:
        if not Path(file).is_file() or Path(file).stat().st_size == 0:
            raise InputError(f"corpus file {file} is missing or empty")
    base_spec, settings, specials = None, dict(DEFAULT_SPECIALS[kind]), []
    base_tok = None
    if like is not None:
        base_tok = load_tokenizer(like)
        base_spec = json.loads(base_tok.backend_tokenizer.to_str())
        settings = {
            attr: str(getattr(base_tok, attr))
            for attr in ROLE_ATTRIBUTES.values()
            if getattr(base_tok, attr, None) is not None
        }
        specials = [
            a.content for _, a in sorted(base_tok.added_tokens_decoder.items()) if a.special
        ]
    for token in settings.values():
        if token not in specials:
            specials.append(token)
    pipeline = _pipeline(kind, base_spec)
    byte_level = "ByteLevel" in json.dumps(pipeline.get("pre_tokenizer"))
    alphabet = pre_tokenizers.ByteLevel.alphabet() if byte_level else []
    smallest = len(specials) + len(alphabet) + 1
    if vocab_size < smallest:
        raise InputError(f"vocab size {vocab_size} is too small: needs at least {smallest}")

    tok = _empty_tokenizer(kind, pipeline, settings.get("unk_token"))
    trainer: trainers.Trainer
    if kind == "bpe":
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=specials, initial_alphabet=alphabet,
            show_progress=progress,
        )  # fmt: skip
    elif kind == "unigram":
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size, special_tokens=specials, initial_alphabet=alphabet,
            unk_token=settings.get("unk_token"), show_progress=progress,
        )  # fmt: skip
    else:
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size, special_tokens=specials, show_progress=progress
        )
    tok.train_from_iterator(_lines([Path(c) for c in corpus], max_bytes), trainer)
    if tok.get_vocab_size() <= len(specials):
        raise InputError("the corpus produced no tokens")
    if base_spec is not None and base_spec.get("post_processor"):
        spec = json.loads(tok.to_str())
        spec["post_processor"] = _remap_ids(base_spec["post_processor"], tok)
        tok = Tokenizer.from_str(json.dumps(spec))

    extra = {}
    if base_tok is not None:
        extra = {k: getattr(base_tok, k) for k in CONFIG_KEYS if getattr(base_tok, k, None)}
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, **settings, **extra)
    with atomic_folder(Path(out)) as tmp:
        wrapped.save_pretrained(tmp)
    return Path(out)
