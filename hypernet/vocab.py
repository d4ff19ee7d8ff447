"""Vocabulary alignment across tokenizer families.

Every token is reduced to its *surface form*: the bytes it stands for in text, with a leading
space where the token starts a word. Byte-level BPE spells bytes with the GPT-2 byte map (`Ġ` is
a space), SentencePiece writes spaces as `▁` and unknown bytes as `<0xNN>`, WordPiece marks
word-internal pieces with `##`. Once reduced, tokens of different families compare as bytes.

Special tokens have no surface form: they are matched by *role* (bos, eos, pad, unk, chat turn
markers...), never by spelling alone.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache

from transformers import PreTrainedTokenizerFast

from .errors import InputError

BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
# Placeholders a vocabulary reserves for later use (Gemma's <unused12>, Llama-3's
# <|reserved_special_token_3|>, DeepSeek's <｜place▁holder▁no▁7｜>): they stand for nothing yet.
UNUSED = re.compile(r"^<[|｜]?(unused\d+|reserved_special_token_\d+|place▁holder▁no▁\d+)[|｜]?>$")
# Normalizers that change the text itself; spacing conventions (Replace " " -> "▁", Prepend)
# are undone by `surface` instead.
TEXT_FORMS = ("NFC", "NFD", "NFKC", "NFKD")
# Where a tokenizer.json Sequence keeps its parts, by the kind of component.
SEQUENCE_ITEMS = ("normalizers", "pretokenizers", "decoders", "processors")

# Roles that a special token can play, and the attribute names transformers uses for them.
ROLE_ATTRIBUTES = {
    "bos": "bos_token",
    "eos": "eos_token",
    "pad": "pad_token",
    "unk": "unk_token",
    "cls": "cls_token",
    "sep": "sep_token",
    "mask": "mask_token",
}
# When the other side has no token for a role, the closest stand-in: BERT's [CLS] opens a
# sequence like bos, [SEP] closes it like eos, and a pad token is most often eos reused.
ROLE_FALLBACKS = {"cls": "bos", "bos": "cls", "sep": "eos", "eos": "sep", "pad": "eos"}
# Well-known spellings, for tokens that the tokenizer config does not name.
SPELLED_ROLES = {
    "<s>": "bos",
    "</s>": "eos",
    "<unk>": "unk",
    "<pad>": "pad",
    "<mask>": "mask",
    "[CLS]": "cls",
    "[SEP]": "sep",
    "[UNK]": "unk",
    "[PAD]": "pad",
    "[MASK]": "mask",
    "<|endoftext|>": "eos",
    "<|begin_of_text|>": "bos",
    "<|end_of_text|>": "eos",
    "<|im_start|>": "turn_start",
    "<|im_end|>": "turn_end",
    "<|start_header_id|>": "turn_start",
    "<|eot_id|>": "turn_end",
    "<start_of_turn>": "turn_start",
    "<end_of_turn>": "turn_end",
    "<bos>": "bos",
    "<eos>": "eos",
    "<｜begin▁of▁sentence｜>": "bos",
    "<｜end▁of▁sentence｜>": "eos",
    "<｜▁pad▁｜>": "pad",
    "<|EOT|>": "turn_end",
}


@lru_cache(maxsize=1)
def gpt2_byte_decoder() -> dict[str, int]:
    """The inverse of GPT-2's printable byte map (byte-level BPE spells byte b as chr(map[b]))."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


@lru_cache(maxsize=1)
def gpt2_byte_encoder() -> dict[int, str]:
    return {b: c for c, b in gpt2_byte_decoder().items()}


@dataclass
class Vocab:
    """One tokenizer's tokens as surface bytes, plus its special tokens by role."""

    tokens: list[str]  # raw token strings, by id
    surfaces: list[bytes | None]  # surface bytes by id; None for special tokens
    family: str  # byte_level | sentencepiece | wordpiece | other
    special_roles: dict[int, str] = field(default_factory=dict)  # id -> role
    lowercase: bool = False  # the normalizer lowercases text before tokenizing
    strip_accents: bool = False
    unicode_form: str | None = None  # NFC, NFKC...: the normalizer's Unicode form
    unused: list[int] = field(default_factory=list)  # reserved placeholders, by id

    def __len__(self) -> int:
        return len(self.tokens)

    def by_surface(self) -> dict[bytes, int]:
        """Surface form -> lowest id with that form."""
        index: dict[bytes, int] = {}
        for i, s in enumerate(self.surfaces):
            if s is not None and s not in index:
                index[s] = i
        return index

    def normalize(self, text: bytes) -> bytes:
        """Text as this tokenizer's normalizer leaves it (byte fragments stay as they are):
        what the model behind it would read for `text`."""
        if not (self.lowercase or self.strip_accents or self.unicode_form):
            return text
        try:
            decoded = text.decode()
        except UnicodeDecodeError:
            return text
        if self.unicode_form:
            decoded = unicodedata.normalize(self.unicode_form, decoded)
        if self.lowercase:
            decoded = decoded.lower()
        if self.strip_accents:
            decoded = "".join(
                c for c in unicodedata.normalize("NFD", decoded) if not unicodedata.combining(c)
            )
        return decoded.encode()

    def special_ids(self) -> list[int]:
        return sorted(self.special_roles)

    def notes(self) -> list[str]:
        """What the report should say about this tokenizer's normalization."""
        out = []
        if self.lowercase:
            out.append("lowercases text: cased forms share one token")
        if self.strip_accents:
            out.append("strips accents: accented forms share one token")
        if self.unicode_form:
            out.append(f"{self.unicode_form}-normalizes text: tokens are matched in that form")
        return out


def components(spec: dict | None) -> list[dict]:
    """The leaves of a tokenizer.json normalizer, pre-tokenizer, decoder or post-processor:
    Sequences opened, however deep."""
    if not spec:
        return []
    if spec.get("type") == "Sequence":
        items = next((spec[k] for k in SEQUENCE_ITEMS if spec.get(k)), [])
        return [leaf for item in items for leaf in components(item)]
    return [spec]


def detect_family(spec: dict) -> str:
    """Tell the tokenizer family from its tokenizer.json (the `backend_tokenizer` JSON)."""
    model = spec.get("model") or {}
    parts = components(spec.get("pre_tokenizer")) + components(spec.get("decoder"))
    kinds = {p.get("type") for p in parts}
    if "ByteLevel" in kinds:
        return "byte_level"
    if model.get("type") == "WordPiece":
        return "wordpiece"
    if "Metaspace" in kinds or model.get("byte_fallback") or model.get("type") == "Unigram":
        return "sentencepiece"
    if any(p.get("type") == "Replace" and "▁" in json.dumps(p) for p in parts):
        return "sentencepiece"
    return "other"


def _normalizer_flags(spec: dict) -> tuple[bool, bool, str | None]:
    lowercase = strip = False
    form = None
    for part in components(spec.get("normalizer")):
        kind = part.get("type")
        if kind in TEXT_FORMS:
            form = kind
        elif kind == "Lowercase":
            lowercase = True
        elif kind == "StripAccents":
            strip = True
        elif kind == "BertNormalizer":
            lowercase = lowercase or bool(part.get("lowercase"))
            accents = part.get("strip_accents")
            strip = strip or bool(part.get("lowercase") if accents is None else accents)
    return lowercase, strip, form


def surface(token: str, family: str, continuing_prefix: str = "##") -> bytes:
    """The bytes a (non-special) token stands for, with a leading space if it starts a word."""
    if family == "byte_level":
        decoder = gpt2_byte_decoder()
        if all(c in decoder for c in token):
            return bytes(decoder[c] for c in token)
        return token.encode()  # an added token spelled in plain text
    if family == "sentencepiece":
        m = BYTE_FALLBACK.match(token)
        if m:
            return bytes([int(m.group(1), 16)])
        return token.replace("▁", " ").encode()
    if family == "wordpiece":
        if continuing_prefix and token.startswith(continuing_prefix) and token != continuing_prefix:
            return token[len(continuing_prefix) :].encode()
        return b" " + token.encode()
    return token.encode()


def _special_roles(tokenizer: PreTrainedTokenizerFast) -> dict[int, str]:
    """Roles of special and added-special tokens: from the config first, then by spelling."""
    roles: dict[int, str] = {}
    for role, attr in ROLE_ATTRIBUTES.items():
        token = getattr(tokenizer, attr, None)
        if token is None:
            continue
        tid = tokenizer.convert_tokens_to_ids(str(token))
        if isinstance(tid, int) and tid >= 0 and tid not in roles:
            roles[tid] = role
    for tid, added in tokenizer.added_tokens_decoder.items():
        if not added.special or tid in roles or BYTE_FALLBACK.match(added.content):
            continue  # byte-fallback pieces <0xNN> are text, however they were registered
        roles[tid] = SPELLED_ROLES.get(added.content, f"token:{added.content}")
    return roles


def _added_surface(token: str, family: str) -> bytes:
    """An added (not special) token matches normalized text: SentencePiece-style tokenizers
    normalize spaces to `▁` first (Gemma's "▁▁" is two spaces), others match it verbatim."""
    return surface(token, family) if family == "sentencepiece" else token.encode()


# Ids a vocabulary may leave unnamed below its highest one (real vocabularies put special
# tokens above a gap: o200k's run to 199997, then 199999 and 200018). Each gap id is still a row
# of the checkpoint, so a few ids spread over millions are refused, not made into rows.
GAP_SHARE, MIN_GAP = 0.01, 1024


def check_ids(vocab: dict[str, int]) -> tuple[dict[int, str], int]:
    """({id: token}, rows): every id names one token, and the checkpoint needs `rows` = highest
    id + 1 rows, the ids no token names among them (placeholders) being at most
    max(MIN_GAP, GAP_SHARE of the vocabulary)."""
    id_to_token: dict[int, str] = {}
    for token, i in vocab.items():
        if i in id_to_token:
            raise InputError(
                f"token ids must be unique; id {i} names both {id_to_token[i]!r} and {token!r}"
            )
        if i < 0:
            raise InputError(f"token ids must not be negative; {token!r} has id {i}")
        id_to_token[i] = token
    if not id_to_token:
        raise InputError("tokenizer has an empty vocabulary")
    rows = max(id_to_token) + 1
    gaps, allowed = rows - len(id_to_token), max(MIN_GAP, int(GAP_SHARE * len(id_to_token)))
    if gaps > allowed:
        raise InputError(
            f"token ids leave {gaps} ids unnamed below the highest, {rows - 1}: each would be an "
            f"embedding row, and at most {allowed} are allowed for {len(id_to_token)} tokens "
            f"(1% of the vocabulary, or {MIN_GAP})"
        )
    return id_to_token, rows


def load_vocab(tokenizer: PreTrainedTokenizerFast) -> Vocab:
    """Surface forms and special roles of every id of a fast tokenizer."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    family = detect_family(spec)
    id_to_token, size = check_ids(tokenizer.get_vocab())
    tokens = [id_to_token.get(i, "") for i in range(size)]
    prefix = (spec.get("model") or {}).get("continuing_subword_prefix") or "##"
    roles = _special_roles(tokenizer)
    added = set(tokenizer.added_tokens_decoder)  # rebuilt on every access: read it once
    surfaces: list[bytes | None] = []
    unused: list[int] = []
    for i, tok in enumerate(tokens):
        if UNUSED.match(tok) or i not in id_to_token:  # reserved, or an id no token names
            unused.append(i)
            roles.pop(i, None)
            surfaces.append(None)
        elif i in roles or not tok:
            surfaces.append(None)
        elif i in added and not BYTE_FALLBACK.match(tok):
            surfaces.append(_added_surface(tok, family))
        else:
            surfaces.append(surface(tok, family, prefix))
    return Vocab(tokens, surfaces, family, roles, *_normalizer_flags(spec), unused=unused)


class Decomposer:
    """Split any byte string into base-tokenizer pieces, bypassing its pre-tokenizer.

    A new token's surface is not ordinary text (it may be a fragment of a UTF-8 character, or
    start with a space), so it goes straight to the base tokenizer's model in that model's own
    spelling: GPT-2 bytes for byte-level BPE, `▁` and `<0xNN>` for SentencePiece.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerFast, vocab: Vocab, rows: int) -> None:
        self.model = tokenizer.backend_tokenizer.model
        self.backend = tokenizer.backend_tokenizer
        self.vocab = vocab
        self.rows = rows
        self.byte_ids = self._byte_ids(tokenizer)

    def _byte_ids(self, tokenizer: PreTrainedTokenizerFast) -> dict[int, int]:
        """Base id of each single byte, where the base vocabulary has one."""
        out: dict[int, int] = {}
        for i, s in enumerate(self.vocab.surfaces):
            if s is not None and len(s) == 1 and i < self.rows:
                out.setdefault(s[0], i)
        return out

    def __call__(self, text: bytes) -> list[int]:
        """Base ids with a row; bytes the base vocabulary lacks are left out."""
        return [i for i in self.spell(text) if i < self.rows]

    def spell(self, text: bytes) -> list[int]:
        """Base ids, and `rows + b` for each byte b that has no row of its own (the
        hypernetwork learns rows for those). The text is first normalized as the base
        tokenizer would."""
        text = self.vocab.normalize(text)
        family = self.vocab.family
        if family == "byte_level":
            ids = self._byte_level(text)
        elif family == "sentencepiece":
            ids = self._sentencepiece(text)
        else:
            ids = [i for i in self._encode_text(text) if i < self.rows]
            if not ids:  # nothing the model knows: spell it in bytes
                ids = [self.byte_ids.get(b, self.rows + b) for b in text]
        return ids

    def _byte_level(self, text: bytes) -> list[int]:
        """Bytes the base vocabulary lacks (SmolLM2 lacks 21) split the text: BPE must not
        merge across them as if they were not there."""
        ids: list[int] = []
        start = 0
        for end in range(len(text) + 1):
            if end == len(text) or text[end] not in self.byte_ids:
                ids += self._tokenize_model(self._gpt2_spelling(text[start:end]))
                if end < len(text):
                    ids.append(self.rows + text[end])
                start = end + 1
        return ids

    def _tokenize_model(self, spelled: str) -> list[int]:
        return [t.id for t in self.model.tokenize(spelled)] if spelled else []

    @staticmethod
    def _gpt2_spelling(text: bytes) -> str:
        encoder = gpt2_byte_encoder()
        return "".join(encoder[b] for b in text)

    def _sentencepiece(self, text: bytes) -> list[int]:
        try:
            decoded = text.decode()
        except UnicodeDecodeError:  # a fragment of a character: spell it byte by byte
            return [self.byte_ids.get(b, self.rows + b) for b in text]
        return [i for i in self._tokenize_model(decoded.replace(" ", "▁")) if i < self.rows]

    def _encode_text(self, text: bytes) -> list[int]:
        """WordPiece and others: run the full pipeline on the text (lossy for fragments)."""
        return self.backend.encode(text.decode(errors="replace"), add_special_tokens=False).ids
