"""Cuts: tokenizers trained like a base but cutting text as other families do, drawn by the
hypernetwork's sampler so it sees the tokens those families make."""

from __future__ import annotations

from pathlib import Path

import pytest
import tiny

from hypernet.cuts import CUTS
from hypernet.errors import InputError
from hypernet.tokenizer_train import train_in_memory
from hypernet.vocab import load_vocab

# Sentences that end lines, numbers of several digits, indented code: where families differ.
LINES = [
    "The fox ran home.\n",
    "It was 1234567 steps away.\n",
    "def f(x):\n",
    "        return x + 1\n",
    "Das Haus ist 123 Jahre alt.\n",
] * 60
PROBE = "The dog ran home.\nIt was 123 days.\n        return x\n"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.model_dir(tmp_path_factory.mktemp("base"), tiny.byte_level())


def tokens(cut: str, base: Path) -> list[str]:
    tok = train_in_memory(LINES, "bpe", 600, like=base, cut=cut)
    ids = tok(PROBE, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == PROBE  # every cut round-trips
    return tok.convert_ids_to_tokens(ids)


@pytest.mark.parametrize("cut", list(CUTS))
def test_every_cut_round_trips_and_keeps_the_base_s_specials(cut: str, base: Path) -> None:
    tok = train_in_memory(LINES, "bpe", 600, like=base, cut=cut)
    text = PROBE + "Grüße 🦊 ok"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    base_vocab, vocab = load_vocab(tiny.byte_level()), load_vocab(tok)
    assert sorted(vocab.special_roles.values()) == sorted(base_vocab.special_roles.values())
    assert vocab.family == ("sentencepiece" if cut == "metaspace" else "byte_level")


def test_like_keeps_the_base_s_cuts_and_llama3_merges_across_them(base: Path) -> None:
    like, llama3 = tokens("like", base), tokens("llama3", base)
    assert ".Ċ" not in like  # GPT-2's regex, the tiny base's, cuts "." from "\n"
    assert ".Ċ" in llama3  # punctuation glued to the newline after it
    assert "123" in llama3 and "Ġ123" not in llama3  # three digits, apart from their space


def test_digits_by_three_by_one_or_in_runs(base: Path) -> None:
    assert "123" in tokens("llama3", base)
    qwen = tokens("qwen", base)
    assert "123" not in qwen and qwen[qwen.index("1") : qwen.index("1") + 3] == ["1", "2", "3"]
    assert any(t.startswith("Ġ12") for t in tokens("gpt2", base))  # GPT-2: " 123" is one word


def test_metaspace_merges_newlines_and_keeps_space_runs(base: Path) -> None:
    cut = tokens("metaspace", base)
    assert "▁▁▁▁▁▁▁" in cut  # the run before a word's own "▁"
    assert any(t.endswith(".\n") for t in cut)


def test_unknown_cuts_and_wordpiece_are_refused(base: Path) -> None:
    with pytest.raises(InputError, match="unknown cut 'bert'"):
        train_in_memory(LINES, "bpe", 600, like=base, cut="bert")
    with pytest.raises(InputError, match="not wordpiece"):
        train_in_memory(LINES, "wordpiece", 600, like=base, cut="llama3")
