from __future__ import annotations

import json
import random
from itertools import pairwise
from pathlib import Path

import pytest
import tiny
from tokenizers import (
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from hypernet.cuts import LLAMA3_PATTERN
from hypernet.errors import InputError
from hypernet.tokenizer_train import train_tokenizer

GERMAN = "Grüße aus München! Die Straße ist schön, 🙂 und der Fluß fließt über Äcker.\n"
HARD = [GERMAN, "日本語 ✓ \x00\t  two  spaces \r\n", "def f(x):\n\treturn x**2  # Ünïcödé"]
SYLLABLES = ["sch", "ei", "ün", "ge", "ber", "straß", "en", "ung", "keit", "ö", "ä", "ü", "ß", "au",
             "mü", "chen", "der", "die", "das", "tra", "fl", "ie", "ss"]  # fmt: skip
BYTE_LEVEL_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
SENTENCEPIECE_SPECIALS = ["<unk>", "<s>", "</s>"]
BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
BERT_TEMPLATE = processors.TemplateProcessing(
    single="[CLS] $A [SEP]",
    pair="[CLS] $A [SEP] $B:1 [SEP]:1",
    special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
)


def _pseudo_german(n_lines: int) -> list[str]:
    rng = random.Random(0)
    words = ["".join(rng.choices(SYLLABLES, k=rng.randint(1, 4))) for _ in range(600)]
    return [
        " ".join(rng.choices(words, k=rng.randint(4, 12))).capitalize() + ".\n"
        for _ in range(n_lines)
    ]


def _split_byte_level() -> PreTrainedTokenizerFast:
    """Byte-level BPE with a chat template whose pre-tokenizer is a Split regex, then ByteLevel,
    as Llama 3's and Qwen's are."""
    tok = tiny.byte_level()
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    return tok


def _llama_style() -> PreTrainedTokenizerFast:
    """SentencePiece BPE as Llama 2 converts: spaces normalized to ▁, no pre-tokenizer, byte
    fallback pieces in the plain vocabulary, bos added by the post-processor."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence(
        [
            decoders.Replace("▁", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1),
        ]
    )
    pieces = [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.BpeTrainer(
        vocab_size=500, special_tokens=SENTENCEPIECE_SPECIALS + pieces, show_progress=False
    )
    tok.train_from_iterator(tiny.TEXT, trainer)
    spec = json.loads(tok.to_str())
    spec["added_tokens"] = spec["added_tokens"][:3]
    tok = Tokenizer.from_str(json.dumps(spec))
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def _bert_style() -> PreTrainedTokenizerFast:
    tok = tiny.wordpiece()
    tok.backend_tokenizer.post_processor = BERT_TEMPLATE
    return tok


def _spec(folder: Path) -> dict:
    return json.loads((folder / "tokenizer.json").read_text())


def _config(folder: Path, name: str = "tokenizer_config.json") -> dict:
    return json.loads((folder / name).read_text())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    file = tmp_path_factory.mktemp("corpus") / "text.txt"
    file.write_text("".join(_pseudo_german(800)) + ("\n".join(tiny.TEXT) + "\n" + GERMAN) * 5)
    return file


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = {}
    for name, make in [
        ("byte_level", _split_byte_level),
        ("sentencepiece", _llama_style),
        ("wordpiece", _bert_style),
    ]:
        folder = tmp_path_factory.mktemp(name)
        make().save_pretrained(folder)
        out[name] = folder
    config = _config(out["sentencepiece"]) | {"add_bos_token": True, "add_eos_token": False}
    (out["sentencepiece"] / "tokenizer_config.json").write_text(json.dumps(config))
    return out


def _specials_first(tok: PreTrainedTokenizerFast, expected: list[str]) -> None:
    assert tok.convert_ids_to_tokens(list(range(len(expected)))) == expected
    for i in range(len(expected)):
        assert tok.added_tokens_decoder[i].special


def test_bpe_like_a_byte_level_model_is_drop_in(
    corpus: Path, bases: dict[str, Path], tmp_path: Path
) -> None:
    out = train_tokenizer([corpus], "bpe", 600, tmp_path / "t", like=bases["byte_level"])
    assert sorted(p.name for p in out.iterdir()) == [
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    tok = AutoTokenizer.from_pretrained(out)
    base = AutoTokenizer.from_pretrained(bases["byte_level"])
    assert len(tok) == 600
    _specials_first(tok, BYTE_LEVEL_SPECIALS)
    roles = ("bos_token", "eos_token", "pad_token", "unk_token")
    assert [getattr(tok, r) for r in roles] == [
        "<|im_start|>",
        "<|im_end|>",
        "<|im_end|>",
        "<|endoftext|>",
    ]
    assert tok.all_special_tokens == base.all_special_tokens
    config = _config(out)
    assert config["chat_template"] == tiny.CHAT_TEMPLATE == tok.chat_template
    assert (config["bos_token"], config["eos_token"]) == ("<|im_start|>", "<|im_end|>")
    assert _config(out, "special_tokens_map.json")["eos_token"] == "<|im_end|>"
    spec, base_spec = _spec(out), _spec(bases["byte_level"])
    assert spec["pre_tokenizer"]["pretokenizers"][0]["type"] == "Split"
    for part in ("normalizer", "pre_tokenizer", "decoder", "post_processor"):
        assert spec[part] == base_spec[part]
    for text in HARD:
        assert tok.decode(tok(text)["input_ids"]) == text
    assert len(tok(GERMAN)["input_ids"]) < len(base(GERMAN)["input_ids"])
    chat = [{"role": "user", "content": "Grüß Gott"}]
    assert tok.apply_chat_template(chat, tokenize=False) == base.apply_chat_template(
        chat, tokenize=False
    )
    turn = tok("<|im_start|>user")["input_ids"]
    assert turn[0] == tok.convert_tokens_to_ids("<|im_start|>")


def test_bpe_like_a_sentencepiece_model_keeps_byte_fallback_and_bos(
    corpus: Path, bases: dict[str, Path], tmp_path: Path
) -> None:
    out = train_tokenizer([corpus], "bpe", 700, tmp_path / "t", like=bases["sentencepiece"])
    tok = AutoTokenizer.from_pretrained(out)
    assert len(tok) == 700
    _specials_first(tok, SENTENCEPIECE_SPECIALS)
    assert tok.convert_ids_to_tokens([3, 258]) == ["<0x00>", "<0xFF>"]
    assert len(tok.added_tokens_decoder) == 3  # byte pieces are plain vocabulary, not specials
    spec, base_spec = _spec(out), _spec(bases["sentencepiece"])
    assert spec["model"]["byte_fallback"] and spec["model"]["unk_token"] == "<unk>"
    for part in ("normalizer", "pre_tokenizer", "decoder"):
        assert spec[part] == base_spec[part]
    assert not any("▁" in t[1:] for t in tok.get_vocab())  # trained word by word
    assert _config(out)["add_bos_token"] is True
    for text in HARD:
        ids = tok(text)["input_ids"]
        assert ids[0] == tok.bos_token_id
        assert tok.decode(ids, skip_special_tokens=True) == text


def test_wordpiece_like_a_bert_model_keeps_its_template(
    corpus: Path, bases: dict[str, Path], tmp_path: Path
) -> None:
    out = train_tokenizer([corpus], "wordpiece", 500, tmp_path / "t", like=bases["wordpiece"])
    tok = AutoTokenizer.from_pretrained(out)
    assert len(tok) == 500
    _specials_first(tok, BERT_SPECIALS)
    spec, base_spec = _spec(out), _spec(bases["wordpiece"])
    for part in ("normalizer", "pre_tokenizer", "decoder"):
        assert spec[part] == base_spec[part]
    ids = tok("Die Donaudampfschifffahrt")["input_ids"]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert any(t.startswith("##") for t in tok.convert_ids_to_tokens(ids))
    assert tok.decode(ids, skip_special_tokens=True) == "die donaudampfschifffahrt"


@pytest.mark.parametrize("kind", ["bpe", "unigram", "wordpiece"])
@pytest.mark.parametrize("base", ["byte_level", "sentencepiece", "wordpiece"])
def test_every_kind_like_every_family(
    kind: str, base: str, corpus: Path, bases: dict[str, Path], tmp_path: Path
) -> None:
    out = train_tokenizer([corpus], kind, 650, tmp_path / "t", like=bases[base])  # type: ignore[arg-type]
    tok = AutoTokenizer.from_pretrained(out)
    base_tok = AutoTokenizer.from_pretrained(bases[base])
    assert 600 <= len(tok) <= 650
    for attr in ("bos_token", "eos_token", "unk_token", "pad_token", "cls_token", "sep_token"):
        assert getattr(tok, attr) == getattr(base_tok, attr)
    for token in base_tok.all_special_tokens:
        assert tok.added_tokens_decoder[tok.convert_tokens_to_ids(token)].special
    spec = _spec(out)
    assert spec["model"]["type"] == {"bpe": "BPE", "unigram": "Unigram"}.get(kind, "WordPiece")
    if kind == "wordpiece" and base != "wordpiece":
        assert spec["pre_tokenizer"]["type"] == "BertPreTokenizer"
        assert spec["normalizer"]["lowercase"] is False  # the base model is cased
    elif base == "wordpiece":
        assert spec["normalizer"] == _spec(bases[base])["normalizer"]
    if kind != "wordpiece" and base != "wordpiece":
        exact = HARD  # byte-level or byte-fallback: every text survives
    else:
        exact = [text.lower() for text in HARD] if base == "wordpiece" else []
        exact = [t for t in exact if t.isascii()]
    for text in exact:
        assert tok.decode(tok(text)["input_ids"], skip_special_tokens=True) == text


def _lone_markers(tokens: list[str], marker: str) -> int:
    """How often the word-start marker stands alone in front of a letter."""
    return sum(a == marker and b[0].isascii() and b[0].isalpha() for a, b in pairwise(tokens))


@pytest.mark.parametrize(
    ("base", "marker"),
    [("byte_level", "Ġ"), ("sentencepiece", "▁")],
    ids=["byte_level", "sentencepiece"],
)
def test_unigram_like_a_bpe_base_keeps_the_space_on_words(
    base: str, marker: str, corpus: Path, bases: dict[str, Path], tmp_path: Path
) -> None:
    """A BPE base always merges its word-start marker with the letter after it: its model never
    read "Ġ" "hello", which Unigram trained on single words gave for the most frequent words."""
    out = train_tokenizer([corpus], "unigram", 650, tmp_path / "t", like=bases[base])
    tok = AutoTokenizer.from_pretrained(out)
    tokens = tok.tokenize("Hello world, hello there.")
    assert f"{marker}hello" in tokens and marker not in tokens
    assert _lone_markers(tok.tokenize(corpus.read_text()[:5000]), marker) == 0
    if base == "byte_level":
        assert tok.tokenize(" hello world") == ["Ġhello", "Ġworld"]
    assert "\x01" not in tok.get_vocab()  # the word end used in training only
    for text in HARD:
        assert tok.decode(tok(text)["input_ids"], skip_special_tokens=True) == text


def test_unigram_like_a_base_reaches_the_asked_size(corpus: Path, tmp_path: Path) -> None:
    """The trainer keeps only the pieces it uses: 771 of 1,200 here when it saw single words.
    Whole words now, and the base's own tokens for the rest."""
    base = tmp_path / "base"
    tiny.byte_level(1500, text=corpus.read_text().splitlines(keepends=True)).save_pretrained(base)
    out = train_tokenizer([corpus], "unigram", 1200, tmp_path / "t", like=base)
    tok = AutoTokenizer.from_pretrained(out)
    assert len(tok) == 1200
    assert tok.tokenize(" hello world") == ["Ġhello", "Ġworld"]
    base_vocab = AutoTokenizer.from_pretrained(base).get_vocab()
    assert sum(t in base_vocab for t in tok.get_vocab()) > 0.9 * 1200


def test_unigram_like_a_byte_level_base_at_the_smallest_sizes(
    corpus: Path, bases: dict[str, Path], tmp_path: Path
) -> None:
    """The marker joined to each word's first letter takes room in training: the vocabulary
    still holds every byte and, room allowing, the marker with each letter after it."""
    for size in (262, 330):
        out = train_tokenizer(
            [corpus], "unigram", size, tmp_path / f"t{size}", like=bases["byte_level"]
        )
        tok = AutoTokenizer.from_pretrained(out)
        assert len(tok) == size
        for text in HARD:
            assert tok.decode(tok(text)["input_ids"]) == text
    assert tok.tokenize(" hello world")[:2] == ["Ġhello", "Ġw"]


def _wide_byte_level(extra: list[str]) -> PreTrainedTokenizerFast:
    """A byte-level BPE vocabulary of real size (4,000 letter tokens plus `extra`)."""
    letters = [
        "".join((a, b, c))
        for a in "abcdefghijklmnop"
        for b in "abcdefghijklmnop"
        for c in "abcdefghijklmnop"
    ][:4000]
    tokens = ["<|endoftext|>", *pre_tokenizers.ByteLevel.alphabet(), *letters, *extra]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_numbers_are_split_like_the_base_splits_them(kind: str, tmp_path: Path) -> None:
    corpus = tmp_path / "numbers.txt"
    rng = random.Random(0)
    lines = _pseudo_german(400)
    corpus.write_text(
        "".join(f"In {rng.randint(0, 3000)} we had {rng.randint(0, 99)} {line}" for line in lines)
    )
    for extra, split in (([], True), (["19", "Ġ1"], False)):
        base = tmp_path / f"base-{split}"
        _wide_byte_level(extra).save_pretrained(base)
        out = train_tokenizer([corpus], kind, 400, tmp_path / f"t-{split}", like=base)  # type: ignore[arg-type]
        tok = AutoTokenizer.from_pretrained(out)
        with_digits = [t for t in tok.get_vocab() if set(t) & set("0123456789")]
        if split:  # the base never saw "19" or " 1": the new tokenizer makes neither
            assert sorted(with_digits) == list("0123456789")
            assert tok.tokenize(" 1990") == ["Ġ", "1", "9", "9", "0"]
            # only ASCII digits: the byte-level alphabet spells "ü" and "ó" with "¼" and "³"
            text = "grüße acción x² ½"
            words = tok.backend_tokenizer.pre_tokenizer.pre_tokenize_str(text)
            base_words = AutoTokenizer.from_pretrained(base).backend_tokenizer.pre_tokenizer
            assert words == base_words.pre_tokenize_str(text)
            assert ("grÃ¼ÃŁe", (0, 5)) in words
        else:
            assert any(len(t) > 1 for t in with_digits)
            assert _spec(out)["pre_tokenizer"] == _spec(base)["pre_tokenizer"]
        assert tok.decode(tok("In 1990 we had 42 cats.")["input_ids"]) == "In 1990 we had 42 cats."


@pytest.mark.parametrize(
    ("kind", "specials"),
    [("bpe", ["<|endoftext|>"]), ("unigram", SENTENCEPIECE_SPECIALS), ("wordpiece", BERT_SPECIALS)],
)
def test_defaults_without_a_base(
    kind: str, specials: list[str], corpus: Path, tmp_path: Path
) -> None:
    out = train_tokenizer([corpus], kind, 600, tmp_path / "t")  # type: ignore[arg-type]
    tok = AutoTokenizer.from_pretrained(out)
    assert len(tok) == 600
    _specials_first(tok, specials)
    if kind == "wordpiece":
        ids = tok("Die Straße")["input_ids"]
        assert (ids[0], ids[-1]) == (tok.cls_token_id, tok.sep_token_id)
        assert tok.decode(ids, skip_special_tokens=True) == "die straße"
        return
    assert tok.unk_token == specials[0]
    for text in HARD:
        assert tok.decode(tok(text)["input_ids"]) == text


def test_max_bytes_reads_only_the_start(corpus: Path, tmp_path: Path) -> None:
    data = corpus.read_bytes()
    cut = data.index(b" ", 3000)  # inside a line, between two whole characters
    head = tmp_path / "head.txt"
    head.write_bytes(data[:cut])
    capped = train_tokenizer([corpus], "bpe", 5000, tmp_path / "capped", max_bytes=cut)
    whole = train_tokenizer([head], "bpe", 5000, tmp_path / "head")
    assert _spec(capped)["model"] == _spec(whole)["model"]
    assert len(_spec(capped)["model"]["vocab"]) < 5000


def test_bad_input(corpus: Path, tmp_path: Path) -> None:
    (tmp_path / "exists").mkdir()
    with pytest.raises(InputError, match="already exists"):
        train_tokenizer([corpus], "bpe", 400, tmp_path / "exists")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(InputError, match="corpus is empty"):
        train_tokenizer([tmp_path / "empty.txt"], "bpe", 400, tmp_path / "a")
    with pytest.raises(InputError, match="not found"):
        train_tokenizer([tmp_path / "nope.txt"], "bpe", 400, tmp_path / "a")
    with pytest.raises(InputError, match="no corpus files"):
        train_tokenizer([], "bpe", 400, tmp_path / "a")
    (tmp_path / "blank.txt").write_text("  \n\n\t\n")
    with pytest.raises(InputError, match="no text"):
        train_tokenizer([tmp_path / "blank.txt"], "wordpiece", 400, tmp_path / "a")
    with pytest.raises(InputError, match="too small: needs at least 258"):
        train_tokenizer([corpus], "bpe", 257, tmp_path / "a")
    with pytest.raises(InputError, match="too small for this corpus"):
        train_tokenizer([corpus], "wordpiece", 20, tmp_path / "a")
    with pytest.raises(InputError, match="unknown tokenizer kind"):
        train_tokenizer([corpus], "bytes", 400, tmp_path / "a")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="not found"):
        train_tokenizer([corpus], "bpe", 400, tmp_path / "a", like=tmp_path / "no-base")
    with pytest.raises(InputError, match="max bytes"):
        train_tokenizer([corpus], "bpe", 400, tmp_path / "a", max_bytes=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blank.txt", "empty.txt", "exists"]
