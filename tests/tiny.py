"""Tiny tokenizers and models built in memory, one per tokenizer family, for fast unit tests."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import torch
from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    trainers,
)
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from hypernet.cuts import LLAMA3_PATTERN, QWEN_PATTERN

TEXT = [
    "The quick brown fox jumps over the lazy dog.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "El rápido zorro marrón salta sobre el perro perezoso.",
    "def hello(name):\n    return f'Hello, {name}!'\n",
    "Hello world, hello there. The dog sleeps; the fox runs.",
    "Grüße aus München! Straße, Größe, schön.",
] * 4

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
)


def byte_level(vocab_size: int = 300, text: list[str] = TEXT, chat: bool = True):
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(text, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|im_end|>",
        chat_template=CHAT_TEMPLATE if chat else None,
    )


def sentencepiece(vocab_size: int = 200, text: list[str] = TEXT):
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace()])
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size + 259,
        special_tokens=["<unk>", "<s>", "</s>", *byte_tokens],
        show_progress=False,
    )
    tok.train_from_iterator(text, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def wordpiece(vocab_size: int = 200, text: list[str] = TEXT):
    """BERT-style WordPiece. Its vocabulary is built here, not trained: WordPiece's trainer
    breaks ties differently from run to run (even the vocabulary's size changes), and tests
    must see the same tokenizer every time. Specials, characters and their `##` forms, then
    the commonest words."""
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre = pre_tokenizers.BertPreTokenizer()
    words = Counter(
        w for line in text for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(line))
    )
    chars = sorted({c for w in words for c in w})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars)]
    common = sorted((w for w in words if len(w) > 1), key=lambda w: (-words[w], w))
    vocab += common[: max(0, vocab_size - len(vocab))]
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def _split_byte_level(pattern: str, vocab_size: int, text: list[str]) -> Tokenizer:
    """Byte-level BPE behind a regex split, as Llama-3 and Qwen3 build theirs."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(text, trainer)
    return tok


def llama3_like(vocab_size: int = 400, text: list[str] = TEXT) -> PreTrainedTokenizerFast:
    """Llama-3's structure: specials after the vocabulary, reserved placeholders among them."""
    tok = _split_byte_level(LLAMA3_PATTERN, vocab_size, text)
    tok.add_special_tokens(
        [
            "<|begin_of_text|>",
            "<|end_of_text|>",
            "<|reserved_special_token_0|>",
            "<|reserved_special_token_1|>",
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|eot_id|>",
        ]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>"
    )


def qwen3_like(vocab_size: int = 400, text: list[str] = TEXT) -> PreTrainedTokenizerFast:
    """Qwen3's structure: NFC first, digits one by one, chat specials, plain added tokens."""
    tok = _split_byte_level(QWEN_PATTERN, vocab_size, text)
    tok.normalizer = normalizers.NFC()
    tok.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tok.add_tokens(["<think>", "</think>"])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )


def gapped(vocab_size: int = 400, text: list[str] = TEXT) -> PreTrainedTokenizerFast:
    """o200k's structure: specials above a gap in the ids (n + 1 and n + 20 after n tokens,
    where o200k has 199999 and 200018 after 199998), so ids are not 0..N-1. They are in the
    model's vocabulary too: an added token's id is kept only where the model names it."""
    spec = json.loads(_split_byte_level(LLAMA3_PATTERN, vocab_size, text).to_str())
    n = len(spec["model"]["vocab"])
    flags = {"single_word": False, "lstrip": False, "rstrip": False, "normalized": False}
    specials = {"<|endoftext|>": n + 1, "<|endofprompt|>": n + 20}
    spec["model"]["vocab"].update(specials)
    spec["added_tokens"] = [
        {"id": i, "content": t, "special": True, **flags} for t, i in specials.items()
    ]
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(spec)), eos_token="<|endoftext|>"
    )


def gemma3_like(vocab_size: int = 300, text: list[str] = TEXT) -> PreTrainedTokenizerFast:
    """Gemma3's structure: spaces normalized to `▁`, no real pre-tokenizer, byte fallback
    pieces in the model's vocabulary, runs of `▁` and newlines as added (not special)
    tokens, and reserved <unusedN> placeholders."""
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<eos>", "<bos>", "<unk>"],
        show_progress=False,
    )
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="never")  # words, for training
    tok.train_from_iterator(text, trainer)
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    for b in range(256):
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    for run in ("▁▁", "▁▁▁", "\n\n"):
        vocab.setdefault(run, len(vocab))
    spec["pre_tokenizer"] = {"type": "Split", "pattern": {"String": " "},
                             "behavior": "MergedWithPrevious", "invert": False}  # fmt: skip
    spec["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
        {"type": "ByteFallback"}, {"type": "Fuse"},
    ]}  # fmt: skip
    tok = Tokenizer.from_str(json.dumps(spec))
    plain = ["<mask>", "<unused0>", "<unused1>", "<unused2>", "▁▁", "\n\n"]
    tok.add_tokens([AddedToken(t, normalized=False) for t in plain])
    tok.add_special_tokens(["<start_of_turn>", "<end_of_turn>"])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<end_of_turn>",
        pad_token="<pad>",
        unk_token="<unk>",
    )


def model_dir(
    path: Path,
    tokenizer: PreTrainedTokenizerFast,
    tied: bool = True,
    extra_rows: int = 0,
    intermediate_size: int = 64,
) -> Path:
    """A tiny Llama saved as safetensors with its tokenizer; `extra_rows` pads the embeddings
    beyond the tokenizer, as many real checkpoints do; a large `intermediate_size` makes a
    checkpoint of many MB that is still fast to transplant (768 bytes per unit)."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer) + extra_rows,
        hidden_size=32,
        intermediate_size=intermediate_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=tied,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def corpus(path: Path, lines: int = 400) -> Path:
    """A small text file in the languages of TEXT, varied enough to draw tokenizers from."""
    words = " ".join(TEXT).split()
    rng = random.Random(0)
    text = "\n".join(" ".join(rng.choices(words, k=rng.randint(4, 12))) for _ in range(lines))
    path.write_text(text + "\n")
    return path


def hypernet(model: Path, out: Path, steps: int = 2, **changes: object) -> Path:
    """A hypernetwork for a tiny model, trained for a couple of steps and exported to `out`."""
    from hypernet.network.model import HyperConfig
    from hypernet.network.training import TrainConfig, Trainer

    config = TrainConfig(
        steps=steps,
        batch=2,
        seq_len=16,
        negatives=64,
        rec_batch=64,
        vocab_min=300,
        vocab_max=400,
        slice_chars=6000,
        heldout_chars=400,
        **changes,
    )
    hyper = HyperConfig(max_pieces=6, width=32, layers=1, heads=2)
    out.mkdir(parents=True)
    text = corpus(out.parent / f"{out.name}.txt")
    Trainer(model, [text], out, config, hyper, log=lambda m: None).fit(progress=False)
    return out
