from __future__ import annotations

from huggingface_hub import ModelCard

from hypernet.card import render


def _report(**extra: object) -> dict:
    vocab = dict(copied=10, overlap=0.5, specials_by_role=2, specials_unmatched=0, unused=0)
    vocab.update(predicted=8, mean_fallback=1)
    tokenizer = {"family": "bpe", "size": 20, "normalization": []}
    report = dict(method="hybrid", options={"weight": 0.3}, base_model="base", tokenizer="new")
    report.update(tied=True, base_tokenizer=tokenizer, new_tokenizer=tokenizer, vocab=vocab)
    report.update(timings={"resolve": 0.25, "write": 1.0}, method_choice="asked for")
    return {**report, "hypernet": None, "donor": None, "eval": None, "refine": None, **extra}


def test_the_card_carries_hub_metadata_and_the_figures() -> None:
    card = ModelCard(render(_report()))
    assert card.data.library_name == "transformers"
    assert card.data.tags == ["tokengraft", "tokenizer-transplant"]
    assert "| copied (same surface form) | 10 (50.0%) |" in card.text
    assert "Stage timings (s): resolve 0.2, write 1.0." in card.text
    assert "## Quality" not in card.text and "## Refinement" not in card.text


def test_quality_and_refinement_appear_when_measured() -> None:
    scores = {"bits_per_byte": 1.0, "tokens_per_byte": 0.25}
    evaluation = dict(text="/srv/data/texts/fox.txt", bytes=900, before=scores, after=scores)
    evaluation.update(ratio=1.0, copied_share=0.75, predicted_share=0.25)
    refine = dict(rows="new", trained_rows=8, text_bytes=100, texts=["a", "b"], steps=4)
    refine.update(minutes=0.5, probe=4, loss_before=1.0, loss_after=0.5)
    text = render(_report(eval=evaluation, refine=refine))
    assert "On 900 bytes of `fox.txt`" in text and "/srv" not in text
    assert "75.0% have copied rows" in text
    assert "on 100 bytes of unlabeled text (`a`, `b`): 4 steps in 0.5 minutes" in text
