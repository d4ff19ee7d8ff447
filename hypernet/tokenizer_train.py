"""Train BPE, Unigram or WordPiece tokenizers, optionally as drop-in replacements for a model's.

With `like`, the new tokenizer keeps what the base model was trained to expect: its special
tokens (same strings and flags, first in the vocabulary, in the base's order), its post-processor
(ids moved to the new vocabulary), its padding and truncation, its chat template and its
tokenizer_config settings. The text pipeline (normalizer, pre-tokenizer, decoder) follows this
rule, because a pipeline only fits the model kinds it was designed for:
- bpe or unigram like a byte-level or SentencePiece-style base: the base pipeline, unchanged
  (Unigram works on byte-level symbols as well as BPE does); byte_fallback when the base has it;
- wordpiece like a WordPiece base: the base pipeline and its continuing-subword prefix;
- bpe or unigram like a WordPiece base: the base normalizer (the model only ever saw, say,
  lowercased text), then the kind's own pre-tokenizer and decoder as without `like`;
- wordpiece like any other base: BERT's pipeline, but cased and with accents kept, as the base
  model distinguishes them.
Numbers are split into single digits when the base vocabulary holds digits only one at a time
(SmolLM2, Llama 2): a token such as "1990" or " 1" would be one the model never saw.
Without `like`, bpe is GPT-2-style byte-level, unigram is SentencePiece-style (Metaspace with
byte_fallback) and wordpiece is bert-base-uncased-style.

Unigram's trainer is given the words with the first occurrence of each marked, so that it seeds
whole words (`_unigram_words`). Like a base with the same pipeline, the vocabulary is then filled
up to the asked size with the base's own tokens (the trainer keeps only the pieces it uses, fewer
than asked on a small corpus). Where that base is a BPE, whose merges never leave the word-start
marker ("Ġ", "▁") alone in front of a word, the trainer sees the marker glued to the character
after it (`_Glue`) and the lone marker is scored last: it starts a word's first piece as in the
base ("ĠSee", not "Ġ" "See").

Every byte stays encodable: byte-level pipelines start from all 256 byte symbols, byte_fallback
pipelines hold the 256 `<0xNN>` pieces right after the special tokens, as Llama's do.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, get_args

from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import PreTrainedTokenizerFast

from .cuts import CUTS, Cut, spelled
from .errors import InputError
from .files import atomic_folder, require_absent
from .sources import load_tokenizer
from .vocab import BYTE_FALLBACK, ROLE_ATTRIBUTES, Vocab, components, detect_family, load_vocab

Kind = Literal["bpe", "unigram", "wordpiece"]
KINDS: tuple[str, ...] = get_args(Kind)
BYTE_PIECES = [f"<0x{b:02X}>" for b in range(256)]
BYTE_PIECE_SCORE = -1e6  # Unigram: never prefer a byte piece over real pieces for literal text
LONE_MARKER_SCORE = -1e6  # Unigram like a BPE base: "Ġ" alone only where nothing else fits
BYTE_LEVEL_SPACE = "Ġ"  # the byte-level alphabet's symbol for the space byte
# Unigram training (`_unigram_words`): FIRST_END ends a word's first occurrence, and `_Glue` makes
# a word's start marker and the character after it one Supplementary Private Use Area-A character.
FIRST_END = "\x01"
GLUED_FIRST, GLUED_LAST = 0xF0000, 0xFFFFD
RESERVED = re.compile("[\x01\U000f0000-\U000ffffd]")  # words holding these are not trained on
REPEAT_BATCH = 65536  # copies of one word handed to the trainer at a time
FILL_SPREAD = 1e-3  # Unigram fill: the base's tokens, scored within this much below the lowest
DEFAULT_ROLES: dict[str, dict[str, str]] = {
    "bpe": dict.fromkeys(("bos_token", "eos_token", "unk_token"), "<|endoftext|>"),
    "unigram": {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>"},
    "wordpiece": {
        "pad_token": "[PAD]",
        "unk_token": "[UNK]",
        "cls_token": "[CLS]",
        "sep_token": "[SEP]",
        "mask_token": "[MASK]",
    },
}
# tokenizer_config.json keys copied only when the base's config sets them (transformers 5 no
# longer saves the add_* flags; the post-processor carries their effect, the keys document it).
RAW_CONFIG_KEYS = ("add_bos_token", "add_eos_token")
BASE_ATTRIBUTES = (
    "model_max_length", "clean_up_tokenization_spaces", "padding_side", "truncation_side",
    "model_input_names",
)  # fmt: skip


@dataclass
class _Recipe:
    """Everything that decides how the new tokenizer is built, before any corpus is read."""

    kind: Kind
    normalizer: dict | None
    pre_tokenizer: dict | None
    decoder: dict | None
    byte_fallback: bool = False
    roles: dict[str, str] = field(default_factory=dict)  # e.g. bos_token -> "<s>"
    specials: list[AddedToken] = field(default_factory=list)
    extra_specials: list[str] = field(default_factory=list)  # transformers' extra_special_tokens
    post_processor: dict | None = None
    padding: dict | None = None
    truncation: dict | None = None
    config: dict[str, Any] = field(default_factory=dict)  # extra tokenizer_config.json entries
    wordpiece: dict[str, Any] = field(default_factory=dict)  # continuing prefix, max chars
    # The base vocabulary holds digits one at a time (SmolLM2, Llama 2): its model never saw a
    # token like "1990" or " 1", so the new tokenizer must not make one.
    split_digits: bool = False
    # Unigram like a base with the same pipeline: the base tokenizer, whose tokens fill the
    # vocabulary up to the asked size; where it is a BPE, its word-start marker ("Ġ", "▁"),
    # which its merges never leave alone before a word.
    base: Tokenizer | None = None
    marker: str | None = None

    @property
    def byte_level(self) -> bool:
        return any(c.get("type") == "ByteLevel" for c in components(self.pre_tokenizer))

    @property
    def alphabet(self) -> list[str]:
        return pre_tokenizers.ByteLevel.alphabet() if self.byte_level else []

    @property
    def byte_pieces(self) -> list[str]:
        return BYTE_PIECES if self.byte_fallback else []

    @property
    def smallest_vocab(self) -> int:
        return len(self.specials) + len(self.alphabet) + len(self.byte_pieces) + 1

    def training_pre_tokenizer(self) -> dict | None:
        """SentencePiece-style pipelines that keep text in one piece would let merges cross
        words; train them split at `▁`, as SentencePiece itself does, and save them unchanged."""
        pre = self.pre_tokenizer
        if pre is None:
            if "▁" not in json.dumps(self.normalizer, ensure_ascii=False):
                return self._with_digits(None)  # a pipeline that never splits
            pre = spelled(pre_tokenizers.Metaspace(prepend_scheme="never"))  # ▁ already in place
        elif pre.get("type") == "Metaspace" and not pre.get("split", True):
            pre = {**pre, "split": True}
        return self._with_digits(pre)

    def saved_pre_tokenizer(self) -> dict | None:
        return self._with_digits(self.pre_tokenizer)

    def _with_digits(self, pre: dict | None) -> dict | None:
        """`pre`, then ASCII digits isolated one by one (after it, so "▁" or "Ġ" stays a
        piece). Not `Digits`: it splits on any numeric character, and the byte-level alphabet
        spells "ü" and "ó" with "¼" and "³"."""
        if not self.split_digits:
            return pre
        digits = spelled(pre_tokenizers.Split(Regex("[0-9]"), "isolated"))
        return digits if pre is None else {"type": "Sequence", "pretokenizers": [pre, digits]}


def _default_recipe(kind: Kind, cased: bool = False) -> _Recipe:
    if kind == "bpe":
        return _Recipe(
            kind,
            None,
            spelled(pre_tokenizers.ByteLevel(add_prefix_space=False)),
            spelled(decoders.ByteLevel()),
            post_processor=spelled(processors.ByteLevel(trim_offsets=False)),
        )
    if kind == "unigram":
        return _Recipe(
            kind,
            None,
            spelled(pre_tokenizers.Metaspace()),
            spelled(decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace()])),
            byte_fallback=True,
        )
    single = "[CLS] $A [SEP]"
    bert = normalizers.BertNormalizer(lowercase=not cased, strip_accents=False if cased else None)
    return _Recipe(
        kind,
        spelled(bert),
        spelled(pre_tokenizers.BertPreTokenizer()),
        spelled(decoders.WordPiece()),
        post_processor=spelled(
            processors.TemplateProcessing(
                single=single,
                pair=f"{single} $B:1 [SEP]:1",
                special_tokens=[("[CLS]", 0), ("[SEP]", 0)],
            )
        ),
    )


def _recipe_like(kind: Kind, like: Path) -> _Recipe:
    """The recipe for a drop-in replacement of the tokenizer in `like` (module docstring)."""
    base = load_tokenizer(like)
    spec = json.loads(base.backend_tokenizer.to_str())
    model = spec.get("model") or {}
    base_is_wordpiece = detect_family(spec) == "wordpiece"
    if (kind == "wordpiece") == base_is_wordpiece:
        recipe = _Recipe(
            kind,
            spec.get("normalizer"),
            spec.get("pre_tokenizer"),
            spec.get("decoder"),
            byte_fallback=kind != "wordpiece" and bool(model.get("byte_fallback")),
        )
        if kind == "unigram":
            recipe.base = base.backend_tokenizer
            recipe.marker = _word_marker(recipe) if model.get("type") == "BPE" else None
    else:
        recipe = _default_recipe(kind, cased=True)
        if kind != "wordpiece":
            recipe.normalizer = spec.get("normalizer")
    if kind == "wordpiece" and base_is_wordpiece:
        recipe.wordpiece = {
            "continuing_subword_prefix": model.get("continuing_subword_prefix", "##"),
            "max_input_chars_per_word": model.get("max_input_chars_per_word", 100),
        }
    recipe.post_processor = spec.get("post_processor")
    if not recipe.byte_level and recipe.post_processor:
        recipe.post_processor = _without_byte_level(recipe.post_processor)
    recipe.padding, recipe.truncation = spec.get("padding"), spec.get("truncation")
    recipe.roles = {
        attr: str(getattr(base, attr))
        for attr in ROLE_ATTRIBUTES.values()
        if getattr(base, attr, None) is not None
    }
    recipe.specials = [
        a
        for _, a in sorted(base.added_tokens_decoder.items())
        if a.special and not BYTE_FALLBACK.match(a.content)
    ]
    recipe.extra_specials = [str(t) for t in base.extra_special_tokens]
    config_file = Path(like) / "tokenizer_config.json"
    raw = json.loads(config_file.read_text()) if config_file.is_file() else {}
    recipe.config = {k: raw[k] for k in RAW_CONFIG_KEYS if k in raw}
    recipe.config.update({k: getattr(base, k) for k in BASE_ATTRIBUTES})
    if base.chat_template:
        recipe.config["chat_template"] = base.chat_template
    recipe.split_digits = _splits_digits(load_vocab(base)) and not any(
        c.get("type") == "Digits" for c in components(recipe.pre_tokenizer)
    )
    return recipe


def _word_marker(recipe: _Recipe) -> str | None:
    """The symbol a pipeline puts in place of the space that starts a word, if any."""
    if recipe.byte_level:
        return BYTE_LEVEL_SPACE
    for node in components(recipe.pre_tokenizer) + components(recipe.normalizer):
        if node.get("type") == "Metaspace":
            return node.get("replacement", "▁")
        if node.get("type") == "Replace" and node.get("pattern") == {"String": " "}:
            return node.get("content")  # Llama 2: spaces normalized to "▁"
    return None


def _splits_digits(vocab: Vocab) -> bool:
    """Whether a real-sized vocabulary holds no token with a digit beside anything else: its
    tokenizer was trained with numbers split into digits. A vocabulary of a few thousand tokens
    trained without that rule always has some ("00", "19", " 1")."""
    ascii_digits = set(b"0123456789")
    with_digits = [s for s in vocab.surfaces if s is not None and ascii_digits & set(s)]
    return len(vocab) >= 4096 and bool(with_digits) and all(len(s) == 1 for s in with_digits)


def _without_byte_level(processor: dict) -> dict | None:
    """ByteLevel post-processing only trims byte-level offsets; other pipelines must drop it."""
    if processor.get("type") == "ByteLevel":
        return None
    if processor.get("type") == "Sequence":
        kept = [p for p in processor.get("processors", []) if p.get("type") != "ByteLevel"]
        return {**processor, "processors": kept} if kept else None
    return processor


def _retarget(node: Any, token_id: Callable[[str], int]) -> Any:
    """A post-processor copy whose special-token ids come from `token_id`."""
    if isinstance(node, dict):
        out = {k: _retarget(v, token_id) for k, v in node.items()}
        if isinstance(out.get("tokens"), list) and isinstance(out.get("ids"), list):
            out["ids"] = [token_id(t) for t in out["tokens"]]  # TemplateProcessing
        return out
    if isinstance(node, list):
        if len(node) == 2 and isinstance(node[0], str) and isinstance(node[1], int):
            return [node[0], token_id(node[0])]  # BertProcessing / RobertaProcessing pairs
        return [_retarget(v, token_id) for v in node]
    return node


def _complete_specials(recipe: _Recipe) -> None:
    """Role tokens and the tokens the post-processor inserts are special tokens too, even where
    the base kept them in its plain vocabulary. WordPiece, and Unigram without byte coverage,
    fail on unseen characters unless they have an unknown token: they get one."""
    named: list[str] = []
    _retarget(recipe.post_processor, lambda t: named.append(t) or 0)
    if recipe.padding:
        named.append(recipe.padding["pad_token"])
    covered = recipe.byte_level or recipe.byte_fallback
    if "unk_token" not in recipe.roles and recipe.kind != "bpe" and not covered:
        recipe.roles["unk_token"] = "[UNK]" if recipe.kind == "wordpiece" else "<unk>"
    have = {t.content for t in recipe.specials}
    for token in [*recipe.roles.values(), *named]:
        if token not in have:
            recipe.specials.append(AddedToken(token, normalized=False, special=True))
            have.add(token)


def _lines(corpus: list[Path], max_bytes: int | None) -> Iterator[list[str]]:
    """Batches of corpus lines, cut off after `max_bytes` UTF-8 bytes."""
    left = max_bytes
    for file in corpus:
        with open(file, encoding="utf-8", errors="replace") as f:
            batch: list[str] = []
            for line in f:
                if left is not None:
                    data = line.encode()
                    if len(data) >= left:
                        batch.append(data[:left].decode(errors="ignore"))
                        yield batch
                        return
                    left -= len(data)
                batch.append(line)
                if len(batch) == 1000:
                    yield batch
                    batch = []
            if batch:
                yield batch


def _trainer(recipe: _Recipe, vocab_size: int, progress: bool) -> trainers.Trainer:
    specials = [*recipe.specials, *recipe.byte_pieces]
    if recipe.kind == "bpe":
        return trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=specials,
            initial_alphabet=recipe.alphabet,
            show_progress=progress,
        )
    if recipe.kind == "unigram":  # plus FIRST_END, dropped after training
        return trainers.UnigramTrainer(
            vocab_size=vocab_size + 1,
            special_tokens=specials,
            initial_alphabet=[*recipe.alphabet, FIRST_END],
            unk_token=recipe.roles.get("unk_token"),
            show_progress=progress,
        )
    return trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        show_progress=progress,
        continuing_subword_prefix=recipe.wordpiece.get("continuing_subword_prefix", "##"),
    )


@dataclass
class _Glue:
    """Each word's start marker ("Ġ", "▁") and the character after it as one character, for the
    Unigram trainer: it then never learns to cut the marker off a word, as the base's BPE never
    does. No pairs, no change."""

    pairs: dict[str, str]  # "Ġh" -> its private-use character

    @classmethod
    def of(cls, marker: str | None, words: Iterable[str]) -> _Glue:
        starts = sorted({w[:2] for w in words if len(w) > 1 and w[0] == marker})
        room = GLUED_LAST - GLUED_FIRST + 1  # more pairs than that: the rest stay apart
        return cls({pair: chr(GLUED_FIRST + i) for i, pair in enumerate(starts[:room])})

    def word(self, word: str) -> str:
        glued = self.pairs.get(word[:2])
        return word if glued is None else glued + word[2:]

    def piece(self, piece: str) -> str:
        """A trained piece in the text's own characters."""
        if not RESERVED.search(piece):
            return piece
        return "".join(self._apart.get(c, c) for c in piece)

    @cached_property
    def _apart(self) -> dict[str, str]:
        return {glued: pair for pair, glued in self.pairs.items()}


def _word_counts(
    lines: Iterable[list[str]],
    normalizer: normalizers.Normalizer | None,
    pre_tokenizer: pre_tokenizers.PreTokenizer | None,
) -> Counter[str]:
    """The words of `lines`, normalized and split, less those holding a RESERVED character."""
    counts: Counter[str] = Counter()
    for batch in lines:
        for line in batch:
            counts.update(
                w for w in _words(line, normalizer, pre_tokenizer) if not RESERVED.search(w)
            )
    return counts


def _words(
    line: str,
    normalizer: normalizers.Normalizer | None,
    pre_tokenizer: pre_tokenizers.PreTokenizer | None,
) -> list[str]:
    """`line` normalized and split into words, empty words left out."""
    text = normalizer.normalize_str(line) if normalizer else line
    if pre_tokenizer is None:
        return [text] if text else []
    return [word for word, _ in pre_tokenizer.pre_tokenize_str(text) if word]


def _unigram_words(counts: Counter[str], glue: _Glue) -> Iterator[list[str]]:
    """Each word glued, as often as counted, followed by FIRST_END the first time.

    The Unigram trainer seeds its pieces from a suffix array of the distinct words, each written
    once and ended by a NUL, and that array lists only the substrings followed by two different
    characters: a word was a seed only where it began a longer word ("Ġthe" for "Ġthey"), never
    "Ġhello" or "ĠSee", so they came out as "Ġ" "hell" "o", and far fewer pieces than asked. Ended
    once by FIRST_END, every word met twice is followed by two different characters."""
    for word, count in counts.items():
        glued = glue.word(word)
        yield [glued + FIRST_END]
        for done in range(1, count, REPEAT_BATCH):
            yield [glued] * min(REPEAT_BATCH, count - done)


def _train_unigram(
    recipe: _Recipe, tok: Tokenizer, lines: Iterable[list[str]], vocab_size: int, progress: bool
) -> Tokenizer:
    """`tok` trained on glued, marked words (`_unigram_words`), its pieces then fitted to the
    base; the trainer counts each glued pair as one more character."""
    normalizer, pre_tokenizer = tok.normalizer, tok.pre_tokenizer
    counts = _word_counts(lines, normalizer, pre_tokenizer)
    glue = _Glue.of(recipe.marker, counts)
    tok.normalizer = tok.pre_tokenizer = None  # the words come normalized and split
    trainer = _trainer(recipe, vocab_size + len(glue.pairs), progress)
    tok.train_from_iterator(_unigram_words(counts, glue), trainer)
    tok.normalizer, tok.pre_tokenizer = normalizer, pre_tokenizer
    spec = json.loads(tok.to_str())
    trained = spec["model"]["vocab"]
    spec["model"]["vocab"] = _unigram_pieces(recipe, trained, glue, counts, vocab_size)
    return Tokenizer.from_str(json.dumps(spec))


def _unigram_pieces(
    recipe: _Recipe, trained: list[list], glue: _Glue, counts: Counter[str], vocab_size: int
) -> list[list]:
    """The trained [piece, score] list in the text's characters, without FIRST_END, at most
    `vocab_size` long (single characters and special tokens kept). Like a base: filled up to
    `vocab_size` with the base's tokens, those it uses most on the corpus first, scored below
    every trained piece (they take over only where they replace several); and the base's
    word-start marker alone scored last: its BPE always merges the marker with what follows, so
    its model never saw it alone before a word."""
    best: dict[str, float] = {}
    for piece, score in trained:  # special tokens first, then the best-scored pieces
        if piece != FIRST_END:
            best.setdefault(glue.piece(piece), score)
    pieces = [[piece, score] for piece, score in best.items()]
    if len(pieces) > vocab_size:  # the trainer had room for the glued pairs
        fixed = len(recipe.specials) + len(recipe.byte_pieces)
        pieces = _best(pieces, fixed, set(glue.pairs), vocab_size)
    if recipe.base is not None and len(pieces) < vocab_size:
        have = {piece for piece, _ in pieces}
        fill = _base_tokens(recipe.base, counts, have)[: vocab_size - len(pieces)]
        lowest = min(score for _, score in pieces)
        step = FILL_SPREAD / max(len(fill), 1)
        pieces += [[token, lowest - step * (i + 1)] for i, token in enumerate(fill)]
    if recipe.marker is not None:
        pieces = [[p, LONE_MARKER_SCORE if p == recipe.marker else s] for p, s in pieces]
    return pieces


def _best(pieces: list[list], fixed: int, pairs: set[str], vocab_size: int) -> list[list]:
    """`pieces` cut to `vocab_size`, in their order: the first `fixed` (special tokens) and the
    single characters, then the glued `pairs` (a BPE's first merges), then the best-scored."""
    kept = [i < fixed or len(piece) == 1 for i, (piece, _) in enumerate(pieces)]
    rest = [i for i, k in enumerate(kept) if not k]
    rest.sort(key=lambda i: (pieces[i][0] not in pairs, -pieces[i][1]))
    for i in rest[: max(vocab_size - sum(kept), 0)]:
        kept[i] = True
    return [piece for piece, k in zip(pieces, kept, strict=True) if k]


def _base_tokens(base: Tokenizer, counts: Counter[str], have: set[str]) -> list[str]:
    """The base's plain tokens not in `have`: first those its model cuts the counted words into,
    most used first, then the rest in id order (a BPE's merge order); none without words."""
    if not counts:
        return []
    used: Counter[str] = Counter()
    for word, count in counts.items():
        for token in base.model.tokenize(word):
            used[token.value] += count
    vocab = base.get_vocab(with_added_tokens=False)
    skip = have | {t.content for t in base.get_added_tokens_decoder().values()}
    ranked = [t for t, _ in used.most_common()] + sorted(vocab, key=vocab.__getitem__)
    return [t for t in dict.fromkeys(ranked) if t not in skip and not BYTE_FALLBACK.match(t)]


def _untrained(recipe: _Recipe) -> Tokenizer:
    model: models.Model
    unk = recipe.roles.get("unk_token")
    if recipe.kind == "bpe":
        model = models.BPE(unk_token=None if recipe.byte_level else unk)
    elif recipe.kind == "unigram":
        model = models.Unigram()
    else:
        model = models.WordPiece(unk_token=unk, **recipe.wordpiece)
    spec = json.loads(Tokenizer(model).to_str())
    spec.update(
        normalizer=recipe.normalizer,
        pre_tokenizer=recipe.training_pre_tokenizer(),
        decoder=recipe.decoder,
    )
    return Tokenizer.from_str(json.dumps(spec))


def _finish(recipe: _Recipe, trained: Tokenizer) -> Tokenizer:
    """Put back what training needed changed, and move the base's ids to the new vocabulary."""
    spec = json.loads(trained.to_str())
    token_id = trained.token_to_id
    spec["pre_tokenizer"] = recipe.saved_pre_tokenizer()
    spec["post_processor"] = _retarget(recipe.post_processor, token_id)
    spec["truncation"] = recipe.truncation
    if recipe.padding:
        spec["padding"] = {**recipe.padding, "pad_id": token_id(recipe.padding["pad_token"])}
    if recipe.byte_fallback:
        spec["model"]["byte_fallback"] = True
        pieces = set(BYTE_PIECES)
        spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] not in pieces]
        if recipe.kind == "unigram":
            spec["model"]["vocab"] = [
                [p, BYTE_PIECE_SCORE if p in pieces else s] for p, s in spec["model"]["vocab"]
            ]
    return Tokenizer.from_str(json.dumps(spec))


def _check_corpus(corpus: list[Path]) -> list[Path]:
    files = [Path(c) for c in corpus]
    if not files:
        raise InputError("no corpus files given")
    for file in files:
        if not file.is_file():
            raise InputError(f"corpus file {file} not found")
    if sum(f.stat().st_size for f in files) == 0:
        raise InputError("the corpus is empty")
    return files


def _save(recipe: _Recipe, tok: Tokenizer, folder: Path) -> None:
    """tokenizer.json, tokenizer_config.json (chat template inline) and special_tokens_map.json."""
    # add_* flags given to the constructor would rebuild the post-processor: file only
    raw = {k: v for k, v in recipe.config.items() if k in RAW_CONFIG_KEYS}
    settings = {k: v for k, v in recipe.config.items() if k not in RAW_CONFIG_KEYS}
    if recipe.extra_specials:
        settings["extra_special_tokens"] = recipe.extra_specials
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, **recipe.roles, **settings)
    wrapped.save_pretrained(folder, save_jinja_files=False)
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text()) | raw
    config_file.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    tokens_map: dict[str, Any] = dict(recipe.roles)
    if recipe.extra_specials:
        tokens_map["additional_special_tokens"] = recipe.extra_specials
    (folder / "special_tokens_map.json").write_text(
        json.dumps(tokens_map, indent=2, ensure_ascii=False) + "\n"
    )


def _recipe(kind: Kind, like: Path | None, cut: str = "like") -> _Recipe:
    if kind not in KINDS:
        raise InputError(f"unknown tokenizer kind {kind!r}; choose one of {', '.join(KINDS)}")
    if cut not in CUTS:
        raise InputError(f"unknown cut {cut!r}; choose one of {', '.join(CUTS)}")
    if like is not None:
        recipe = _recipe_like(kind, like)
    else:
        recipe = _default_recipe(kind)
        recipe.roles = dict(DEFAULT_ROLES[kind])
    if (chosen := CUTS[cut]) is not None:
        _cut_as(recipe, chosen)
    _complete_specials(recipe)
    return recipe


def _cut_as(recipe: _Recipe, cut: Cut) -> None:
    """Another family's text pipeline in place of the recipe's; the base's special tokens,
    roles and settings stay. Its own rules decide digits, and no base token fills the
    vocabulary (the base cut its text elsewhere)."""
    if recipe.kind == "wordpiece":
        raise InputError("a cut applies to bpe and unigram tokenizers, not wordpiece")
    recipe.normalizer, recipe.pre_tokenizer = cut.normalizer, cut.pre_tokenizer
    recipe.decoder, recipe.byte_fallback = cut.decoder, cut.byte_fallback
    recipe.split_digits, recipe.base, recipe.marker = False, None, None
    if not recipe.byte_level and recipe.post_processor:
        recipe.post_processor = _without_byte_level(recipe.post_processor)


def _train(
    recipe: _Recipe, lines: Iterable[list[str]], vocab_size: int, progress: bool
) -> Tokenizer:
    if vocab_size < recipe.smallest_vocab:
        raise InputError(
            f"vocab size {vocab_size} is too small: needs at least {recipe.smallest_vocab} "
            f"({len(recipe.specials)} special tokens, "
            f"{len(recipe.alphabet) + len(recipe.byte_pieces)} byte tokens, 1 learned token)"
        )
    tok = _untrained(recipe)
    if recipe.kind == "unigram":
        tok = _train_unigram(recipe, tok, lines, vocab_size, progress)
    else:
        tok.train_from_iterator(lines, _trainer(recipe, vocab_size, progress))
    fixed = len(recipe.specials) + len(recipe.alphabet) + len(recipe.byte_pieces)
    if tok.get_vocab_size() <= fixed:
        raise InputError("the corpus holds no text to learn tokens from")
    if tok.get_vocab_size() > vocab_size:
        raise InputError(
            f"vocab size {vocab_size} is too small for this corpus: its characters and the "
            f"special tokens alone take {tok.get_vocab_size()} tokens"
        )
    return _finish(recipe, tok)


def train_tokenizer(
    corpus: list[Path],
    kind: Kind,
    vocab_size: int,
    out: Path,
    like: Path | None = None,
    max_bytes: int | None = None,
    progress: bool = False,
    cut: str = "like",
) -> Path:
    """Train a `kind` tokenizer of at most `vocab_size` tokens on the corpus files (streamed line
    by line, at most `max_bytes` bytes) and save it to the new folder `out`, as a drop-in
    replacement for the tokenizer in folder `like` when given, its text cut as `cut` says."""
    recipe = _recipe(kind, like, cut)
    out = Path(out)
    require_absent(out)
    files = _check_corpus(corpus)
    if max_bytes is not None and max_bytes <= 0:
        raise InputError(f"max bytes must be positive, not {max_bytes}")
    tok = _train(recipe, _lines(files, max_bytes), vocab_size, progress)
    with atomic_folder(out) as tmp:
        _save(recipe, tok, tmp)
    return out


def train_in_memory(
    texts: list[str], kind: Kind, vocab_size: int, like: Path | None = None, cut: str = "like"
) -> PreTrainedTokenizerFast:
    """The same tokenizer as `train_tokenizer` would save, trained on `texts` and kept in memory
    (the hypernetwork's trainer draws thousands of them), its text cut as `cut` says (`cuts`)."""
    recipe = _recipe(kind, like, cut)
    tok = _train(recipe, [texts], vocab_size, progress=False)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **recipe.roles)
