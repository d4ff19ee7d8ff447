"""Distillation across tokenizers: where two tokenizations of one text agree, and what a
student must match there.

Two tokenizations of the same text both end a token at some character offsets: the *aligned
boundaries*. Between consecutive boundaries lies a *chunk* that each side spells in its own
tokens, so each side has a log-likelihood for it (the sum over its tokens), and at each
boundary each side has read exactly the same text, so their predictions of what comes next
are comparable once mapped to bytes. The losses here are pure tensor functions.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from .vocab import Vocab


@dataclass
class Tokenized:
    """One window of text under one tokenizer.

    `ids` starts with BOS when the tokenizer has one. `ends[j]` is the character offset where
    text token j ends; `closed[j]` is False where the next token starts before that (a character
    spread over several byte tokens), so no boundary falls there.
    """

    ids: list[int]
    ends: list[int]
    closed: list[bool]
    bos: bool

    @property
    def boundary_ends(self) -> set[int]:
        return {e for e, c in zip(self.ends, self.closed, strict=True) if c}


def tokenize(tokenizer: PreTrainedTokenizerBase, text: str) -> Tokenized:
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    spans = enc["offset_mapping"]
    ends = [e for _, e in spans]
    starts = [s for s, _ in spans[1:]] + [len(text)]
    closed = [e <= s for e, s in zip(ends, starts, strict=True)]
    bos = tokenizer.bos_token_id
    ids = ([bos] if bos is not None else []) + list(enc["input_ids"])
    return Tokenized(ids, ends, closed, bos is not None)


@dataclass
class Pairing:
    """Where a teacher and a student tokenization of one window agree.

    `boundaries` are character offsets; the start of the text (0) is one when both sides open
    with BOS. For each side, `positions[k]` is the index in `ids` of the position that has read
    exactly up to boundary k, and `chunk[j]` the chunk that text token j belongs to (-1: left out,
    either after the last boundary or in a first chunk one side cannot score).
    """

    boundaries: list[int]
    teacher_positions: Tensor  # [n_boundaries]
    student_positions: Tensor  # [n_boundaries]
    teacher_chunk: Tensor  # [n_teacher_text_tokens]
    student_chunk: Tensor  # [n_student_text_tokens]

    @property
    def n_chunks(self) -> int:
        return max(0, len(self.boundaries) - 1)


def aligned_boundaries(a: Tokenized, b: Tokenized) -> list[int]:
    """Character offsets at which both tokenizations end a token, in order."""
    common = sorted(a.boundary_ends & b.boundary_ends)
    return ([0] if a.bos and b.bos else []) + [e for e in common if e > 0]


def _positions(side: Tokenized, boundaries: list[int]) -> Tensor:
    where = {e: j for j, (e, c) in enumerate(zip(side.ends, side.closed, strict=True)) if c}
    shift = 1 if side.bos else 0  # ids[0] is BOS; text token j sits at ids[j + shift]
    return torch.tensor([where[b] + shift if b > 0 else 0 for b in boundaries], dtype=torch.long)


def _chunks(side: Tokenized, boundaries: list[int]) -> Tensor:
    """Chunk k holds the tokens ending in (boundaries[k], boundaries[k + 1]]."""
    out = []
    for end in side.ends:
        k = bisect_left(boundaries, end) - 1  # boundaries[k] < end <= boundaries[k + 1]
        out.append(k if 0 <= k < len(boundaries) - 1 else -1)
    return torch.tensor(out, dtype=torch.long)


def pair(teacher: Tokenized, student: Tokenized) -> Pairing:
    """Boundaries, positions and chunks; without a BOS on both sides the text before the first
    common boundary is left out, since one side cannot score its first token."""
    boundaries = aligned_boundaries(teacher, student)
    return Pairing(
        boundaries,
        _positions(teacher, boundaries),
        _positions(student, boundaries),
        _chunks(teacher, boundaries),
        _chunks(student, boundaries),
    )


def token_logprobs(logits: Tensor, ids: Tensor, bos: bool) -> Tensor:
    """Log-probability of each text token given what precedes it: [n_text_tokens].

    `logits` [n_ids, V] are the model's outputs at every position of `ids` [n_ids]. Without BOS
    the first text token has no prediction; it gets 0 and must be left out of every chunk.
    """
    assert logits.ndim == 2 and ids.ndim == 1 and logits.shape[0] == ids.shape[0]
    lp = torch.log_softmax(logits[:-1].float(), dim=-1).gather(1, ids[1:, None]).squeeze(1)
    return lp if bos else torch.cat([lp.new_zeros(1), lp])


def chunk_logprobs(token_lp: Tensor, chunk: Tensor, n_chunks: int) -> Tensor:
    """Sum of token log-probabilities per chunk: [n_chunks]. Tokens in chunk -1 are left out."""
    assert token_lp.shape == chunk.shape
    keep = chunk >= 0
    return token_lp.new_zeros(n_chunks).index_add(0, chunk[keep], token_lp[keep])


def first_bytes(vocab: Vocab, rows: int) -> Tensor:
    """The first byte each of `rows` rows spells, or -1 (special tokens, empty surfaces, padding
    rows beyond the vocabulary): [rows]."""
    first = [s[0] if s else -1 for s in vocab.surfaces[:rows]]
    return torch.tensor(first + [-1] * (rows - len(first)), dtype=torch.long)


def byte_logprobs(logits: Tensor, first: Tensor) -> Tensor:
    """The model's distribution over the next byte, from its next-token distribution: the
    mass of every token that starts with that byte. [n, V] logits -> [n, 256] log-probs,
    renormalised over tokens that spell bytes (special tokens are left out)."""
    assert logits.ndim == 2 and first.shape == (logits.shape[1],)
    spelled = first >= 0
    lp = torch.log_softmax(logits[:, spelled].float(), dim=-1)
    mass = lp.new_zeros(logits.shape[0], 256).index_add(1, first[spelled], lp.exp())
    return mass.clamp_min(1e-12).log()


def chunk_distance(student: Tensor, teacher: Tensor, kind: str, temperature: float) -> Tensor:
    """Mean distance between chunk log-likelihoods [n_chunks] of student and teacher.

    "l1" is |s - t|. "under" is max(t - s, 0): the student is pulled up where it trails the
    teacher and left alone where it leads. "binary" treats each chunk as an event the model
    either produces or not (probability exp(logp / temperature)) and takes the cross-entropy of
    the student's event against the teacher's, as ALM does: hard chunks count less, and a
    student that beats the teacher on a chunk is pulled back only gently.
    """
    assert student.shape == teacher.shape and student.ndim == 1
    if student.numel() == 0:
        return student.sum()
    if kind == "l1":
        return (student - teacher).abs().mean()
    if kind == "under":
        return (teacher - student).clamp_min(0).mean()
    if kind != "binary":
        raise ValueError(f"unknown chunk distance {kind!r}")
    s = (student / temperature).clamp(max=-1e-6)
    p_t = (teacher / temperature).clamp(max=-1e-6).exp()
    log_not_s = torch.log(-torch.expm1(s))
    loss = -(p_t * s + (1 - p_t) * log_not_s)
    # minus the teacher's own entropy, so that a perfect match scores 0
    t = torch.log(p_t)
    floor = -(p_t * t + (1 - p_t) * torch.log(-torch.expm1(t)))
    return (loss - floor).mean()


def byte_kl(student: Tensor, teacher: Tensor) -> Tensor:
    """KL(teacher || student) between next-byte distributions [n, 256] (log-probs), averaged."""
    assert student.shape == teacher.shape and student.shape[-1] == 256
    if student.shape[0] == 0:
        return student.sum()
    return F.kl_div(student, teacher, log_target=True, reduction="batchmean")


def hidden_distance(student: Tensor, teacher: Tensor) -> Tensor:
    """Mean squared error between hidden states [n, d], in units of the teacher's variance."""
    assert student.shape == teacher.shape and student.ndim == 2
    if student.shape[0] == 0:
        return student.sum()
    scale = teacher.var(dim=0).mean().clamp_min(1e-6)
    return ((student - teacher) ** 2).mean() / scale
