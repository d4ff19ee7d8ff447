"""How model families cut text before their merges: text pipelines a trained tokenizer may take
in place of its base's.

A tokenizer trained "like" a base cuts text where the base does, so its tokens are the base's
tokens or merges within them. Other families merge across those cuts: Llama-3 glues
punctuation to the newlines after it (".\\n", "):\\n") and groups digits by three where SmolLM2
reads one digit at a time; Gemma keeps whitespace runs and joins a word's punctuation and
newlines to it. A hypernetwork learns rows for such tokens only if it trains on tokenizers
that make them (`network.training`). Each cut:

- `like`: the base's own pipeline (`tokenizer_train`'s rules);
- `llama3`: byte-level behind the Llama-3 / cl100k regex: contractions, letters with one
  leading non-letter, numbers of 1-3 digits, punctuation runs with the newlines after them,
  newline runs with the spaces before them, whitespace runs whole;
- `qwen`: the same with one digit per number and NFC first (Qwen2, Qwen3);
- `gpt2`: byte-level with GPT-2's regex: digit runs of any length, one leading space;
- `metaspace`: SentencePiece-style (Llama 2, Gemma): spaces written `▁`, cut only where a
  word starts, so punctuation and newlines merge with what they follow, and runs of spaces
  are pieces; byte fallback.

Every cut keeps every byte encodable: byte-level ones from the byte alphabet, `metaspace` by
its `<0xNN>` pieces.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tokenizers import Regex, decoders, normalizers, pre_tokenizers

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN_PATTERN = LLAMA3_PATTERN.replace(r"\p{N}{1,3}", r"\p{N}")
METASPACE_PATTERN = "▁+(?=▁)|▁?[^▁]+|▁+"


def spelled(component: Any) -> dict[str, Any]:
    """A tokenizers component (normalizer, pre-tokenizer, decoder...) as tokenizer.json
    spells it."""
    return json.loads(component.__getstate__())


@dataclass(frozen=True)
class Cut:
    """A text pipeline as tokenizer.json spells it (None: none)."""

    normalizer: dict | None
    pre_tokenizer: dict | None
    decoder: dict
    byte_fallback: bool = False


def _regex_byte_level(pattern: str, normalizer: dict | None = None) -> Cut:
    split = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    pre = spelled(pre_tokenizers.Sequence([split, byte_level]))
    return Cut(normalizer, pre, spelled(decoders.ByteLevel()))


def _metaspace() -> Cut:
    """A word is its leading `▁` and what follows up to the next `▁`; a run of `▁` before a
    word is a piece of its own, as SentencePiece's whitespace-only pieces are."""
    pre = pre_tokenizers.Split(Regex(METASPACE_PATTERN), behavior="isolated")
    decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    normalizer = normalizers.Replace(" ", "▁")
    return Cut(spelled(normalizer), spelled(pre), spelled(decoder), byte_fallback=True)


CUTS: dict[str, Cut | None] = {  # None: the base's own
    "like": None,
    "llama3": _regex_byte_level(LLAMA3_PATTERN),
    "qwen": _regex_byte_level(QWEN_PATTERN, spelled(normalizers.NFC())),
    "gpt2": Cut(
        None,
        spelled(pre_tokenizers.ByteLevel(add_prefix_space=False)),
        spelled(decoders.ByteLevel()),
    ),
    "metaspace": _metaspace(),
}
