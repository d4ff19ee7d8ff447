from __future__ import annotations

import math
from pathlib import Path

import pytest
import tiny
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from transformers.modeling_outputs import CausalLMOutputWithPast

from hypernet.errors import InputError
from hypernet.evaluate import evaluate, evaluate_folder
from hypernet.texts import has_eval_text, read_eval_text

TEXT = " ".join(tiny.TEXT)


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return tiny.byte_level()


def llama(vocab: int, tied: bool = True) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=tied,
    )
    return LlamaForCausalLM(config)


def per_token_nll(model: LlamaForCausalLM, ids: list[int], window: int, stride: int) -> float:
    """The reference: each target scored one at a time with the context the windows give it."""
    total = 0.0
    with torch.inference_mode():
        for t in range(1, len(ids)):
            if t < window:
                start = 0
            else:
                end = min(window + ((t - window) // stride + 1) * stride, len(ids))
                start = end - window
            logits = model(input_ids=torch.tensor([ids[start:t]])).logits[0, -1]
            total += F.cross_entropy(logits, torch.tensor(ids[t])).item()
    return total


def test_full_context_matches_per_token_reference(tokenizer: PreTrainedTokenizerFast) -> None:
    model = llama(len(tokenizer))
    text = TEXT[:300]
    result = evaluate(model, tokenizer, text, window=512, stride=256)
    ids = [tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False).input_ids]
    assert len(ids) < 512
    expected = per_token_nll(model, ids, 512, 256) / math.log(2) / len(text.encode())
    assert result.bits_per_byte == pytest.approx(expected, abs=1e-4)


def test_sliding_windows_count_each_token_once(tokenizer: PreTrainedTokenizerFast) -> None:
    model = llama(len(tokenizer))
    ids = [tokenizer.bos_token_id, *tokenizer(TEXT, add_special_tokens=False).input_ids]
    n_bytes = len(TEXT.encode())
    assert len(ids) > 100
    for window, stride, batch in [(32, 16, 1), (40, 7, 3), (25, 24, 2)]:
        seen: list[float] = []
        result = evaluate(
            model,
            tokenizer,
            TEXT,
            window=window,
            stride=stride,
            batch_size=batch,
            progress=seen.append,
        )
        expected = per_token_nll(model, ids, window, stride) / math.log(2) / n_bytes
        assert result.bits_per_byte == pytest.approx(expected, abs=1e-4)
        assert seen == sorted(seen) and seen[-1] == pytest.approx(1.0)
    full = evaluate(model, tokenizer, TEXT, window=512, stride=256)
    assert 0 < full.bits_per_byte < math.inf
    assert full.tokens == len(ids) - 1 and full.bytes == n_bytes
    assert full.tokens_per_byte == full.tokens / full.bytes


class Untrimmed(LlamaForCausalLM):
    """A causal LM whose forward cannot skip logits, like a few architectures."""

    def forward(self, input_ids: torch.Tensor) -> CausalLMOutputWithPast:
        return super().forward(input_ids=input_ids)


def test_models_without_logits_to_keep_score_the_same(tokenizer: PreTrainedTokenizerFast) -> None:
    model = llama(len(tokenizer))
    untrimmed = Untrimmed(model.config)
    untrimmed.load_state_dict(model.state_dict())
    a = evaluate(model, tokenizer, TEXT, window=40, stride=16, batch_size=2)
    b = evaluate(untrimmed, tokenizer, TEXT, window=40, stride=16, batch_size=2)
    assert a.bits_per_byte == pytest.approx(b.bits_per_byte, abs=1e-5)


def test_uniform_model_scores_log2_vocab_per_token(tokenizer: PreTrainedTokenizerFast) -> None:
    model = llama(len(tokenizer), tied=False)
    torch.nn.init.zeros_(model.lm_head.weight)
    result = evaluate(model, tokenizer, TEXT, window=64, stride=32)
    expected = math.log2(len(tokenizer)) * result.tokens / result.bytes
    assert result.bits_per_byte == pytest.approx(expected, rel=1e-6)


def test_without_bos_the_first_token_is_not_scored() -> None:
    tokenizer = tiny.wordpiece()
    assert tokenizer.bos_token_id is None
    model = llama(len(tokenizer), tied=False)
    torch.nn.init.zeros_(model.lm_head.weight)
    result = evaluate(model, tokenizer, TEXT, window=64, stride=32)
    expected = math.log2(len(tokenizer)) * (result.tokens - 1) / result.bytes
    assert result.bits_per_byte == pytest.approx(expected, rel=1e-6)


def test_bad_arguments_are_input_errors(tokenizer: PreTrainedTokenizerFast) -> None:
    model = llama(len(tokenizer))
    for kw in [{"window": 8, "stride": 8}, {"window": 8, "stride": 0}, {"window": 1}]:
        with pytest.raises(InputError):
            evaluate(model, tokenizer, TEXT, **kw)
    with pytest.raises(InputError):
        evaluate(model, tokenizer, "")


def test_evaluate_folder_restores_mode_and_matches(
    tmp_path: Path, tokenizer: PreTrainedTokenizerFast
) -> None:
    folder = tiny.model_dir(tmp_path / "m", tokenizer)
    model = LlamaForCausalLM.from_pretrained(folder)
    model.train()
    direct = evaluate(model, tokenizer, TEXT, window=64, stride=32)
    assert model.training
    from_folder = evaluate_folder(folder, TEXT, window=64, stride=32)
    assert from_folder.to_dict() == pytest.approx(direct.to_dict())


def test_read_eval_text_cuts_at_a_line_or_character(tmp_path: Path) -> None:
    file = tmp_path / "t.txt"
    file.write_text("Grüße\nüber alles\n", encoding="utf-8")
    assert read_eval_text(file, None) == "Grüße\nüber alles\n"
    assert read_eval_text(file, 12) == "Grüße\n"  # back to the line break
    assert read_eval_text(file, 9) == "Grüße\n"  # byte 9 is inside "ü"
    file.write_text("a\n" + "b" * 20, encoding="utf-8")
    assert read_eval_text(file, 10) == "a\nbbbbbbbb"  # the line break would keep too little
    file.write_text("ü" * 10, encoding="utf-8")
    assert read_eval_text(file, 5) == "üü"
    assert not has_eval_text(file, 1) and has_eval_text(file, 2) and has_eval_text(file, 10**6)
    file.write_text("")
    assert not has_eval_text(file, None)
    file.write_bytes(b"\xff\xfe")
    with pytest.raises(InputError):
        read_eval_text(file, None)
    with pytest.raises(InputError):
        read_eval_text(tmp_path / "missing.txt", None)


def test_window_longer_than_the_model_is_clamped(tokenizer: PreTrainedTokenizerFast) -> None:
    model = llama(len(tokenizer))
    model.config.max_position_embeddings = 64
    clamped = evaluate(model, tokenizer, TEXT, window=1024, stride=512)
    assert clamped == evaluate(model, tokenizer, TEXT, window=64, stride=32)
