from __future__ import annotations

import json
import unicodedata

import pytest
import tiny
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from hypernet.align import align
from hypernet.vocab import Decomposer, Vocab, components, gpt2_byte_decoder, load_vocab, surface


def test_gpt2_byte_map_is_a_bijection_over_bytes() -> None:
    decoder = gpt2_byte_decoder()
    assert sorted(decoder.values()) == list(range(256))
    assert decoder["Ġ"] == ord(" ") and decoder["Ċ"] == ord("\n")


def test_surface_forms_per_family() -> None:
    assert surface("Ġhello", "byte_level") == b" hello"
    assert surface("Ã¼", "byte_level") == "ü".encode()
    assert surface("▁hello", "sentencepiece") == b" hello"
    assert surface("<0xC3>", "sentencepiece") == b"\xc3"
    assert surface("##ello", "wordpiece") == b"ello"
    assert surface("hello", "wordpiece") == b" hello"


def test_families_and_normalizers_are_detected() -> None:
    assert load_vocab(tiny.byte_level()).family == "byte_level"
    assert load_vocab(tiny.sentencepiece()).family == "sentencepiece"
    wp = load_vocab(tiny.wordpiece())
    assert wp.family == "wordpiece"
    assert wp.lowercase and wp.strip_accents
    assert any("lowercases" in n for n in wp.notes())


def test_components_open_nested_sequences_of_every_kind() -> None:
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Sequence([normalizers.Lowercase()])]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    tok.post_processor = processors.Sequence([processors.ByteLevel()])
    spec = json.loads(tok.to_str())
    kinds = {
        key: [c["type"] for c in components(spec[key])]
        for key in ("normalizer", "pre_tokenizer", "decoder", "post_processor")
    }
    assert kinds == {
        "normalizer": ["NFC", "Lowercase"],
        "pre_tokenizer": ["Digits", "ByteLevel"],
        "decoder": ["ByteFallback", "Fuse"],
        "post_processor": ["ByteLevel"],
    }
    assert components(None) == [] and components({"type": "Sequence"}) == []


def test_special_tokens_have_roles_and_no_surface() -> None:
    v = load_vocab(tiny.byte_level())
    roles = {v.tokens[i]: r for i, r in v.special_roles.items()}
    assert roles == {"<|im_start|>": "bos", "<|im_end|>": "eos", "<|endoftext|>": "unk"}
    assert all(v.surfaces[i] is None for i in v.special_roles)
    w = load_vocab(tiny.wordpiece())
    assert {w.tokens[i]: r for i, r in w.special_roles.items()} == {
        "[PAD]": "pad",
        "[UNK]": "unk",
        "[CLS]": "cls",
        "[SEP]": "sep",
        "[MASK]": "mask",
    }


def test_exact_matches_are_by_surface_across_families() -> None:
    base = load_vocab(tiny.byte_level(vocab_size=400))
    new = load_vocab(tiny.sentencepiece())
    alignment = align(base, new, base_rows=len(base))
    assert alignment.copies, "byte-level and sentencepiece vocabularies share surface forms"
    for i, j in alignment.copies.items():
        assert new.surfaces[i] == base.surfaces[j]
        assert new.tokens[i] != base.tokens[j] or new.tokens[i].isascii()
    # "▁the" (sentencepiece) and "Ġthe" (byte-level) are the same token
    the_new = new.tokens.index("▁the")
    assert base.tokens[alignment.copies[the_new]] == "Ġthe"
    covered = set(alignment.copies) | set(alignment.specials) | set(alignment.predict)
    covered |= set(alignment.unmatched_specials)
    assert covered == set(range(len(new)))


def test_specials_match_by_role_across_families() -> None:
    base = load_vocab(tiny.byte_level())
    new = load_vocab(tiny.wordpiece())
    alignment = align(base, new, base_rows=len(base))
    named = {new.tokens[i]: base.tokens[j] for i, j in alignment.specials.items()}
    assert named["[CLS]"] == "<|im_start|>"  # cls -> bos
    assert named["[SEP]"] == "<|im_end|>"  # sep -> eos
    assert named["[UNK]"] == "<|endoftext|>"
    assert named["[PAD]"] == "<|im_end|>"  # pad -> eos when the base has no pad role of its own
    assert [new.tokens[i] for i in alignment.unmatched_specials] == ["[MASK]"]


def test_base_ids_beyond_the_embedding_rows_are_not_copied() -> None:
    tok = tiny.byte_level()
    base = load_vocab(tok)
    rows = len(base) - 50
    alignment = align(base, base, base_rows=rows)
    assert all(j < rows for j in alignment.copies.values())
    assert len(alignment.predict) == 50


def test_decomposer_pieces_spell_the_surface() -> None:
    tok = tiny.byte_level()
    vocab = load_vocab(tok)
    split = Decomposer(tok, vocab, len(vocab))
    for text in [" Hundehütte".encode(), "ß".encode()[:1], b"    return", "Grüße".encode()]:
        pieces = split(text)
        assert pieces and b"".join(vocab.surfaces[i] for i in pieces) == text


def test_decomposer_sentencepiece_uses_byte_fallback_for_fragments() -> None:
    tok = tiny.sentencepiece()
    vocab = load_vocab(tok)
    split = Decomposer(tok, vocab, len(vocab))
    assert b"".join(vocab.surfaces[i] for i in split(b" schnelle")) == b" schnelle"
    assert [vocab.surfaces[i] for i in split(b"\xc3")] == [b"\xc3"]


def test_decomposer_splits_at_bytes_the_base_lacks() -> None:
    tok = tiny.byte_level(text=["ab ab ab abab", "xyz"])  # byte 0x06 is in the alphabet...
    vocab = load_vocab(tok)
    rows = len(vocab)
    split = Decomposer(tok, vocab, rows)
    del split.byte_ids[0x06]  # ...so pretend the base lacks it, as SmolLM2 lacks 21 bytes
    pieces = [vocab.surfaces[i] for i in split(b"a\x06b")]
    assert pieces == [b"a", b"b"], "no piece may span the missing byte"
    spelled = split.spell(b"a\x06b")  # for the hypernetwork: a learned row stands in
    assert spelled[1] == rows + 0x06 and [vocab.surfaces[i] for i in spelled[::2]] == [b"a", b"b"]


def test_chat_turn_tokens_match_by_spelled_role() -> None:
    """A Llama-3-style <|eot_id|> finds SmolLM2-style <|im_end|>, although the base config
    names that token eos and not a turn end."""
    base = load_vocab(tiny.byte_level())
    new_tok = tiny.sentencepiece()
    new_tok.add_special_tokens({"additional_special_tokens": ["<|start_header_id|>", "<|eot_id|>"]})
    new = load_vocab(new_tok)
    alignment = align(base, new, len(base))
    named = {new.tokens[i]: base.tokens[j] for i, j in alignment.specials.items()}
    assert named["<|start_header_id|>"] == "<|im_start|>"
    assert named["<|eot_id|>"] == "<|im_end|>"


def test_empty_vocabulary_is_an_input_error() -> None:
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    from hypernet.errors import InputError

    empty = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE()))
    with pytest.raises(InputError, match="empty vocabulary"):
        load_vocab(empty)


def test_gemma_like_surfaces_bytes_added_runs_and_placeholders() -> None:
    vocab = load_vocab(tiny.gemma3_like())
    by_token = dict(zip(vocab.tokens, vocab.surfaces, strict=True))
    assert by_token["<0x31>"] == b"1" and by_token["▁▁"] == b"  " and by_token["\n\n"] == b"\n\n"
    assert any(t.startswith("▁") and s == b" " + t[1:].encode() for t, s in by_token.items())
    assert [vocab.tokens[i] for i in vocab.unused] == ["<unused0>", "<unused1>", "<unused2>"]
    assert all(vocab.surfaces[i] is None for i in vocab.unused)
    roles = {vocab.tokens[i]: r for i, r in vocab.special_roles.items()}
    assert roles["<bos>"] == "bos" and roles["<eos>"] == "eos" and roles["<pad>"] == "pad"


def test_reserved_specials_are_placeholders_not_unmatched() -> None:
    base, new = load_vocab(tiny.byte_level()), load_vocab(tiny.llama3_like())
    alignment = align(base, new, len(base))
    reserved = [new.tokens[i] for i in alignment.unused]
    assert reserved == ["<|reserved_special_token_0|>", "<|reserved_special_token_1|>"]
    assert not set(alignment.unused) & set(alignment.unmatched_specials)
    assert alignment.summary(len(new))["unused"] == 2


def test_base_normalizer_applies_before_matching() -> None:
    """Qwen3 NFC-normalizes: a decomposed "ü" in another vocabulary reads as the composed one."""
    composed, decomposed = "ü".encode(), unicodedata.normalize("NFD", "ü").encode()
    base = Vocab(["a", "ü"], [b"a", composed], "byte_level", unicode_form="NFC")
    new = Vocab(["x", "y"], [decomposed, b"a"], "byte_level")
    assert align(base, new, 2).copies == {0: 1, 1: 0}
    assert load_vocab(tiny.qwen3_like()).unicode_form == "NFC"


def test_added_tokens_are_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """transformers rebuilds added_tokens_decoder on every access (4 ms with Gemma3's 6,415
    added tokens): once per id was 18 minutes for 262k ids."""
    tok = tiny.gemma3_like()
    cls = type(tok)
    original = cls.added_tokens_decoder
    reads = []

    def counted(self):  # noqa: ANN001, ANN202
        reads.append(1)
        return original.fget(self)

    monkeypatch.setattr(cls, "added_tokens_decoder", property(counted))
    load_vocab(tok)
    assert 0 < len(reads) <= 2
