from __future__ import annotations

import math

import pytest
import tiny
import torch

from hypernet import distill as D
from hypernet.vocab import load_vocab

TEXT = "Grüße aus München! The quick brown fox, def hello(name):\n    return name"


def _check_pairing(teacher: D.Tokenized, student: D.Tokenized, text: str) -> D.Pairing:
    p = D.pair(teacher, student)
    assert p.boundaries == sorted(set(p.boundaries))
    for side, positions in ((teacher, p.teacher_positions), (student, p.student_positions)):
        shift = 1 if side.bos else 0
        for b, pos in zip(p.boundaries, positions.tolist(), strict=True):
            # the position that has read exactly up to the boundary
            assert pos == 0 if b == 0 else side.ends[pos - shift] == b
    return p


@pytest.mark.parametrize("family", ["sentencepiece", "wordpiece", "byte_level"])
def test_boundaries_are_where_both_tokenizations_end_a_token(family: str) -> None:
    teacher = D.tokenize(tiny.byte_level(300), TEXT)
    other = {
        "sentencepiece": tiny.sentencepiece,
        "wordpiece": tiny.wordpiece,
        "byte_level": lambda: tiny.byte_level(400, text=tiny.TEXT[::-1]),
    }[family]()
    student = D.tokenize(other, TEXT)
    p = _check_pairing(teacher, student, TEXT)
    assert len(p.boundaries) >= 10
    # every word end is a boundary for these pre-tokenizers, so "!" and "," are too
    assert TEXT.index("!") + 1 in p.boundaries and TEXT.index(",") + 1 in p.boundaries
    # chunks partition the tokens between the first and the last boundary, on both sides
    for side, chunk in ((teacher, p.teacher_chunk), (student, p.student_chunk)):
        kept = chunk[chunk >= 0]
        assert torch.equal(kept, torch.sort(kept).values)
        assert set(kept.tolist()) == set(range(p.n_chunks))
        for j, k in enumerate(chunk.tolist()):
            if k >= 0:
                assert p.boundaries[k] < side.ends[j] <= p.boundaries[k + 1]


def test_a_character_split_over_byte_tokens_is_never_a_boundary() -> None:
    # a byte-level vocabulary with no merges spells "ü" as two byte tokens with one span
    tok = tiny.byte_level(260, text=["ab"])
    t = D.tokenize(tok, "aü b")
    assert len(t.ends) > len("aü b")
    assert 2 in t.ends and all(e != 1 or c for e, c in zip(t.ends, t.closed, strict=True))
    opened = [e for e, c in zip(t.ends, t.closed, strict=True) if not c]
    assert opened == [2]  # the first byte of ü ends where the second does: not a boundary
    assert 2 in t.boundary_ends


def test_chunk_logprobs_sum_token_logprobs() -> None:
    token_lp = torch.tensor([-1.0, -2.0, -0.5, -3.0])
    chunk = torch.tensor([0, 0, 1, -1])
    assert torch.equal(D.chunk_logprobs(token_lp, chunk, 2), torch.tensor([-3.0, -0.5]))


def test_token_logprobs_without_bos_leave_the_first_token_unscored() -> None:
    logits = torch.randn(5, 7)
    ids = torch.tensor([1, 2, 3, 4, 5])
    with_bos, without = D.token_logprobs(logits, ids, True), D.token_logprobs(logits, ids, False)
    assert with_bos.shape == (4,) and without.shape == (5,) and without[0] == 0
    assert torch.allclose(without[1:], with_bos)


def test_byte_logprobs_sum_tokens_by_first_byte() -> None:
    vocab = load_vocab(tiny.byte_level(300))
    first = D.first_bytes(vocab, len(vocab) + 2)
    assert (first[-2:] == -1).all()
    logits = torch.randn(3, len(vocab) + 2)
    lp = D.byte_logprobs(logits, first)
    assert lp.shape == (3, 256)
    assert torch.allclose(lp.exp().sum(-1), torch.ones(3), atol=1e-5)
    probs = torch.softmax(logits[:, first >= 0], -1)
    space = (first[first >= 0] == ord(" ")).float()
    assert torch.allclose(lp[:, ord(" ")].exp(), probs @ space, atol=1e-5)


@pytest.mark.parametrize("kind", ["binary", "l1", "under"])
def test_chunk_distance_is_zero_at_the_teacher_and_grows_away(kind: str) -> None:
    teacher = torch.tensor([-0.1, -2.0, -7.0])
    assert D.chunk_distance(teacher, teacher, kind, 1.0).abs() < 1e-5
    near, far = teacher - 0.5, teacher - 3.0
    d_near = D.chunk_distance(near, teacher, kind, 1.0)
    assert 0 < d_near < D.chunk_distance(far, teacher, kind, 1.0)


def test_binary_distance_pulls_the_student_up_where_it_is_worse() -> None:
    student = torch.tensor([-3.0], requires_grad=True)
    D.chunk_distance(student, torch.tensor([-math.log(2)]), "binary", 1.0).backward()
    assert student.grad is not None and student.grad.item() < 0


def test_under_distance_ignores_chunks_where_the_student_leads() -> None:
    teacher = torch.tensor([-2.0, -2.0])
    student = torch.tensor([-1.0, -3.0], requires_grad=True)
    D.chunk_distance(student, teacher, "under", 1.0).backward()
    assert student.grad is not None
    assert student.grad[0] == 0 and student.grad[1] < 0  # only the trailing chunk is pulled up


def test_kl_and_hidden_distance_vanish_at_the_target() -> None:
    t = torch.log_softmax(torch.randn(4, 256), -1)
    other = torch.log_softmax(torch.randn(4, 256), -1)
    assert D.byte_kl(t, t).abs() < 1e-6 and D.byte_kl(other, t) > 0
    h = torch.randn(4, 8)
    assert D.hidden_distance(h, h) == 0 and D.hidden_distance(h + 1, h) > 0
