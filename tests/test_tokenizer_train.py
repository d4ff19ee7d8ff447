from __future__ import annotations

import json
from pathlib import Path

import pytest
import tiny
from transformers import AutoTokenizer

from hypernet.errors import InputError
from hypernet.tokenizer_train import train_tokenizer

GERMAN = "Grüße aus München! Die Straße ist schön, 🙂 und der Fluß fließt.\n"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    file = tmp_path_factory.mktemp("corpus") / "text.txt"
    file.write_text(("\n".join(tiny.TEXT) + "\n" + GERMAN) * 20)
    return file


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = {}
    for name, make in [("byte_level", tiny.byte_level), ("sentencepiece", tiny.sentencepiece),
                       ("wordpiece", tiny.wordpiece)]:  # fmt: skip
        folder = tmp_path_factory.mktemp(name)
        make().save_pretrained(folder)
        out[name] = folder
    return out


def test_bpe_like_a_byte_level_model_is_drop_in(
    corpus: Path, bases: dict[str, Path], tmp_path: Path
) -> None:
    out = train_tokenizer([corpus], "bpe", 400, tmp_path / "t", like=bases["byte_level"])
    tok = AutoTokenizer.from_pretrained(out)
    base = AutoTokenizer.from_pretrained(bases["byte_level"])
    assert len(tok) == 400
    assert [tok.convert_ids_to_tokens(i) for i in range(3)] == [
        "<|endoftext|>", "<|im_start|>", "<|im_end|>"
    ]  # fmt: skip
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == (
        "<|im_start|>",
        "<|im_end|>",
        "<|im_end|>",
    )
    assert tok.chat_template == base.chat_template
    spec = json.loads((out / "tokenizer.json").read_text())
    base_spec = json.loads((bases["byte_level"] / "tokenizer.json").read_text())
    assert spec["pre_tokenizer"] == base_spec["pre_tokenizer"]
    for text in [GERMAN, "日本語 ✓ \x00\t  spaces  ", "def f(x):\n\treturn x"]:
        assert tok.decode(tok(text)["input_ids"]) == text
    assert len(tok(GERMAN)["input_ids"]) < len(base(GERMAN)["input_ids"])


@pytest.mark.parametrize("kind", ["bpe", "unigram", "wordpiece"])
@pytest.mark.parametrize("base", ["byte_level", "sentencepiece", "wordpiece"])
def test_every_kind_like_every_family_loads(
    kind: str, base: str, corpus: Path, bases: dict[str, Path], tmp_path: Path
) -> None:
    out = train_tokenizer([corpus], kind, 450, tmp_path / "t", like=bases[base])  # type: ignore[arg-type]
    tok = AutoTokenizer.from_pretrained(out)
    base_tok = AutoTokenizer.from_pretrained(bases[base])
    assert len(tok) <= 450
    for attr in ("bos_token", "eos_token", "unk_token", "cls_token", "sep_token"):
        assert getattr(tok, attr) == getattr(base_tok, attr)
    assert tok("Der Hund")["input_ids"]


def test_wordpiece_base_keeps_its_post_processor(
    corpus: Path, bases: dict[str, Path], tmp_path: Path
) -> None:
    spec = json.loads((bases["wordpiece"] / "tokenizer.json").read_text())
    spec["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                   {"Sequence": {"id": "A", "type_id": 0}},
                   {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}],
        "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [999], "tokens": ["[CLS]"]},
                           "[SEP]": {"id": "[SEP]", "ids": [998], "tokens": ["[SEP]"]}},
    }  # fmt: skip
    (bases["wordpiece"] / "tokenizer.json").write_text(json.dumps(spec))
    out = train_tokenizer([corpus], "wordpiece", 300, tmp_path / "t", like=bases["wordpiece"])
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok("der hund")["input_ids"]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id


def test_bad_input(corpus: Path, tmp_path: Path) -> None:
    (tmp_path / "exists").mkdir()
    with pytest.raises(InputError, match="already exists"):
        train_tokenizer([corpus], "bpe", 400, tmp_path / "exists")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(InputError, match="missing or empty"):
        train_tokenizer([tmp_path / "empty.txt"], "bpe", 400, tmp_path / "a")
    with pytest.raises(InputError, match="too small"):
        train_tokenizer([corpus], "bpe", 100, tmp_path / "b")
    with pytest.raises(InputError, match="unknown tokenizer kind"):
        train_tokenizer([corpus], "bytes", 400, tmp_path / "c")  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.txt", "exists"]
