from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import tiny
import torch

from hypernet.align import align
from hypernet.errors import Cancelled, InputError
from hypernet.network.config import MAX_HELDOUT_CHARS, MAX_SEQ_LEN, STEP_TOKENS
from hypernet.network.model import CONFIG, HyperConfig, HyperNet, read_meta
from hypernet.network.predict import Predictor
from hypernet.network.training import CHECKPOINT, Sampled, TrainConfig, Trainer, resume_recipe
from hypernet.predict import assemble
from hypernet.vocab import load_vocab

HYPER = HyperConfig(max_pieces=6, width=32, layers=1, heads=2)


def _config(**changes: object) -> TrainConfig:
    base = dict(
        steps=40,
        lr=1e-2,
        warmup=2,
        batch=2,
        seq_len=16,
        negatives=64,
        rec_batch=64,
        tokenizer_every=1000,
        vocab_min=420,
        vocab_max=460,
        slice_chars=6000,
        heldout_chars=400,
        eval_every=1000,
        checkpoint_every=1000,
    )
    return TrainConfig(**(base | changes))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("train")
    # a small base vocabulary, so that sampled tokenizers have many tokens to predict
    model = tiny.model_dir(root / "model", tiny.byte_level(270))
    return model, tiny.corpus(root / "text.txt")


def _trainer(setup: tuple[Path, Path], out: Path, **changes: object) -> Trainer:
    model, corpus = setup
    out.mkdir(exist_ok=True)
    hyper = HyperConfig(
        **{k: getattr(HYPER, k) for k in ("max_pieces", "width", "layers", "heads")}
    )
    return Trainer(model, [corpus], out, _config(**changes), hyper, log=lambda m: None)


def test_a_few_steps_lower_the_losses(setup: tuple[Path, Path], tmp_path: Path) -> None:
    trainer = _trainer(setup, tmp_path)
    trainer.train_step()  # draws the one tokenizer of this run
    assert trainer.sampled is not None
    predicted = [i for i in range(len(trainer.sampled.vocab)) if i not in trainer.sampled.base_id]
    assert predicted, "the sampled tokenizer must have tokens to predict"
    batch = trainer._batch(trainer.sampled, trainer.texts[0][1], 16)
    torch.manual_seed(1)
    rec_ids = trainer.rng.getstate()

    def losses() -> tuple[float, float]:
        with torch.no_grad():
            torch.manual_seed(1)  # the same negatives
            lm, _ = trainer.lm_loss(trainer.sampled, batch)  # type: ignore[arg-type]
            trainer.rng.setstate(rec_ids)  # the same re-spelled tokens
            return lm.item(), trainer.rec_loss().item()

    lm0, rec0 = losses()
    for _ in range(39):
        trainer.train_step()
    lm1, rec1 = losses()
    assert lm1 < lm0 - 0.05, (lm0, lm1)
    assert rec1 < rec0, (rec0, rec1)


def test_fit_exports_resumes_and_predicts(setup: tuple[Path, Path], tmp_path: Path) -> None:
    trainer = _trainer(setup, tmp_path, steps=6, checkpoint_every=3, tokenizer_every=2)
    trainer.fit(progress=False)
    meta = read_meta(tmp_path)
    assert meta.recipe["steps_done"] == 6 and meta.recipe["tokenizers_drawn"] == 3
    assert [s["step"] for s in meta.scores["held_out"]] == [0, 6]
    assert all(v > 0 for v in meta.scores["held_out"][-1].values())
    assert (tmp_path / CHECKPOINT / "loop.json").is_file()
    assert not (tmp_path / ".export").exists() and not (tmp_path / "checkpoint.tmp").exists()

    with pytest.raises(InputError, match=r"tokenizer_every 1000 \(saved 2\)"):
        _trainer(setup, tmp_path, steps=8).resume()  # not the saved recipe
    config, hyper, corpus = resume_recipe(tmp_path, {"steps": 8}, None)
    resumed = Trainer(setup[0], corpus, tmp_path, config, hyper, log=lambda m: None)
    resumed.resume()
    assert resumed.step == 6 and resumed.tokenizers_drawn == 3
    for a, b in zip(resumed.net.parameters(), trainer.net.parameters(), strict=True):
        assert torch.equal(a, b)
    assert resumed.optimizer.state_dict()["state"][0]["step"] == 6
    resumed.fit(progress=False)
    assert read_meta(tmp_path).recipe["steps_done"] == 8

    model, _ = setup
    predictor = Predictor.open(tmp_path, str(model))
    rows = predictor.predict([b" fox", b"\xf0\x9f"])
    assert rows["input"].shape == (2, 32) and torch.isfinite(rows["input"]).all()


def test_resume_without_checkpoint(setup: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no checkpoint"):
        _trainer(setup, tmp_path).resume()


def test_untied_base_trains_both_heads(tmp_path: Path) -> None:
    model = tiny.model_dir(tmp_path / "model", tiny.byte_level(270), tied=False, extra_rows=5)
    corpus = tiny.corpus(tmp_path / "text.txt")
    trainer = _trainer((model, corpus), tmp_path / "out", steps=2)
    assert set(trainer.net.heads) == {"input", "output"}
    trainer.train_step()
    assert trainer.net.heads["output"].weight.abs().sum() > 0


def test_sequences_longer_than_the_text_gives_are_a_clear_error(
    setup: tuple[Path, Path], tmp_path: Path
) -> None:
    trainer = _trainer(setup, tmp_path, seq_len=5000)
    sampled = trainer._draw_tokenizer(trainer.texts[0][1])
    with pytest.raises(InputError, match="5000-token sequence"):
        trainer._batch(sampled, trainer.texts[0][1], 5000)


def test_copied_rows_start_as_the_copy_then_learn_a_correction(
    setup: tuple[Path, Path], tmp_path: Path
) -> None:
    trainer = _trainer(setup, tmp_path, copied_rows=True, aux_weight=0.0)
    trainer.train_step()
    sampled = trainer.sampled
    assert sampled is not None
    known = sorted(sampled.base_id)[:50]
    base = trainer.input_rows[[sampled.base_id[i] for i in known]]
    fresh = _trainer(setup, tmp_path / "fresh", copied_rows=True)
    with torch.no_grad():
        assert torch.allclose(fresh._rows(sampled, known)["input"], base, atol=1e-6)
    for _ in range(10):
        trainer.train_step()
    with torch.no_grad():
        assert not torch.allclose(trainer._rows(sampled, known)["input"], base, atol=1e-3)
    plain = _trainer(setup, tmp_path / "plain")
    with torch.no_grad():
        assert torch.equal(plain._rows(sampled, known)["input"], base)
        specials = sorted(sampled.alignment.specials)  # a transplant keeps their base rows
        base = trainer.input_rows[[sampled.alignment.specials[i] for i in specials]]
        assert specials and torch.equal(trainer._rows(sampled, specials)["input"], base)


def test_rows_are_aligned_and_filled_as_a_transplant_does(
    setup: tuple[Path, Path], tmp_path: Path
) -> None:
    trainer = _trainer(setup, tmp_path)
    drawn = trainer._draw_tokenizer(trainer.texts[0][1])
    new = load_vocab(drawn.tokenizer)
    assert drawn.alignment == align(trainer.base_vocab, new, trainer.rows)
    other = trainer._align(tiny.wordpiece())  # [MASK] has no counterpart in the base
    assert other.alignment.unmatched_specials and other.alignment.specials
    specials = [i for i in trainer.base_vocab.special_ids() if i < trainer.rows]
    for sampled in (drawn, other):
        a, ids = sampled.alignment, list(range(len(sampled.vocab)))
        with torch.no_grad():
            rows = trainer._rows(sampled, ids)["input"]
            expected = torch.zeros_like(rows)
            expected[a.predict] = trainer.net(trainer._spell(sampled, a.predict))["input"]
            keep = torch.zeros(len(ids), dtype=torch.bool)
            keep[a.predict] = True
            assemble(trainer.input_rows, a, expected, keep, specials)
        assert torch.allclose(rows, expected, atol=1e-6)


def test_corpus_seq_len_and_weights(setup: tuple[Path, Path], tmp_path: Path) -> None:
    trainer = _trainer(setup, tmp_path, corpus_seq_len={"text": 24}, corpus_weights={"text": 3})
    trainer.train_step()
    assert trainer.seen_tokens == 2 * 25  # batch 2 x (24 + 1), not seq_len 16
    with pytest.raises(InputError, match="no corpus named so"):
        _trainer(setup, tmp_path, corpus_weights={"python": 2.0})
    with pytest.raises(InputError, match="must be positive"):
        _trainer(setup, tmp_path, corpus_seq_len={"text": 0})


def test_resume_restores_the_recipe(setup: tuple[Path, Path], tmp_path: Path) -> None:
    trainer = _trainer(setup, tmp_path, steps=2, checkpoint_every=1, lr=3e-3)
    trainer.fit(progress=False)
    config, hyper, corpus = resume_recipe(tmp_path, {"steps": 5}, None)
    assert (config.steps, config.lr, hyper.width, hyper.layers) == (5, 3e-3, 32, 1)
    assert corpus == [setup[1].resolve()]
    assert read_meta(tmp_path).train_config == trainer.config  # the export has it too
    # a checkpoint from before `train_config` was saved: the recipe holds the same settings
    meta_file = tmp_path / CHECKPOINT / CONFIG
    raw = json.loads(meta_file.read_text())
    assert raw["train_config"]["lr"] == 3e-3 and raw["config"]["width"] == 32
    meta_file.write_text(json.dumps({k: v for k, v in raw.items() if k != "train_config"}))
    assert resume_recipe(tmp_path, {"steps": 5}, None) == (config, hyper, corpus)
    with pytest.raises(InputError, match=r"width 64 \(saved 32\)"):
        resume_recipe(tmp_path, {"width": 64, "max_minutes": 1.0}, None)
    with pytest.raises(InputError, match="corpus files differ"):
        resume_recipe(tmp_path, {}, [tmp_path / "other.txt"])
    # killed between save_checkpoint's two renames: only checkpoint.old (and .tmp) are there
    os.replace(tmp_path / CHECKPOINT, tmp_path / f"{CHECKPOINT}.old")
    resumed = Trainer(setup[0], corpus, tmp_path, config, hyper, log=lambda m: None)
    resumed.resume()
    assert resumed.step == 2
    resumed.fit(progress=False)
    assert read_meta(tmp_path).recipe["steps_done"] == 5


def test_fit_reports_steps_and_held_out_and_honours_cancel(
    setup: tuple[Path, Path], tmp_path: Path
) -> None:
    events: list[dict] = []
    trainer = _trainer(setup, tmp_path, steps=3, eval_every=2)
    trainer.fit(progress=False, report=events.append)
    steps = [e["step"] for e in events if "lm" in e]
    held = [e["step"] for e in events if "held_out" in e]
    assert steps == [1, 2, 3] and held == [0, 2, 3]
    assert set(events[-1]["held_out"]) == {"text"} and events[-1]["fraction"] == 1.0
    cancelling = _trainer(setup, tmp_path / "c", steps=10)
    with pytest.raises(Cancelled):
        cancelling.fit(progress=False, cancelled=lambda: cancelling.step >= 2)
    assert cancelling.step == 2 and not (tmp_path / "c" / "hypernet.json").exists()


def test_the_sampler_draws_every_weighted_cut_and_trains_on_it(
    setup: tuple[Path, Path], tmp_path: Path
) -> None:
    weights = {"like": 1.0, "llama3": 1.0, "metaspace": 1.0}
    trainer = _trainer(setup, tmp_path, cut_weights=weights, tokenizer_every=1)
    text = trainer.texts[0][1]
    families = []
    for _ in range(12):
        sampled = trainer._draw_tokenizer(text)
        spec = json.loads(sampled.tokenizer.backend_tokenizer.to_str())
        regex = "Split" in json.dumps(spec["pre_tokenizer"])
        families.append((sampled.vocab.family, regex))
    assert set(families) == {("byte_level", False), ("byte_level", True), ("sentencepiece", True)}
    for _ in range(3):  # each step on a fresh draw: rows, losses and a step for any cut
        assert all(torch.isfinite(torch.tensor(v)) for v in trainer.train_step().values())
    with pytest.raises(InputError, match="no such cut"):
        _trainer(setup, tmp_path / "bad", cut_weights={"bert": 1.0})


def test_held_out_scores_cover_every_drawn_cut_beside_the_like_one(
    setup: tuple[Path, Path], tmp_path: Path
) -> None:
    trainer = _trainer(setup, tmp_path, cut_weights={"llama3": 1.0, "metaspace": 1.0})
    scores = trainer.evaluate()
    assert set(scores) == {"text", "text/llama3", "text/metaspace"}
    assert all(0 < v < 20 for v in scores.values())
    # each cut has its own tokenizer: the scores differ, and a second evaluation reuses them
    assert len(set(scores.values())) == 3
    assert trainer.evaluate() == scores and len(trainer._heldouts) == 3


def test_a_cancel_during_a_step_stops_it_within_the_step(
    setup: tuple[Path, Path], tmp_path: Path
) -> None:
    trainer = _trainer(setup, tmp_path, steps=5)
    asked = []
    draw = trainer._draw_tokenizer

    def drawing(text: str) -> Sampled:
        sampled = draw(text)
        asked.append("cancel")  # while the tokenizer was trained
        return sampled

    def step_went_on(*args: object) -> None:
        pytest.fail("the step went on after the cancel")

    trainer._draw_tokenizer = drawing  # type: ignore[method-assign]
    trainer.lm_loss = step_went_on  # type: ignore[method-assign,assignment]
    with pytest.raises(Cancelled):
        trainer.fit(progress=False, cancelled=lambda: bool(asked))
    assert trainer.step == 0 and not (tmp_path / CONFIG).exists()


class _Counting:
    """A tokenizer that counts its calls."""

    def __init__(self, tokenizer: object) -> None:
        self.tokenizer, self.calls = tokenizer, 0
        self.bos_token_id = getattr(tokenizer, "bos_token_id", None)

    def __call__(self, *args: object, **kwargs: object) -> object:
        self.calls += 1
        return self.tokenizer(*args, **kwargs)  # type: ignore[operator]


def test_a_cancel_stops_tokenizing_a_batch_and_training_held_out_tokenizers(
    setup: tuple[Path, Path], tmp_path: Path
) -> None:
    trainer = _trainer(setup, tmp_path, batch=4)
    sampled = trainer._draw_tokenizer(trainer.texts[0][1])
    counting = _Counting(sampled.tokenizer)
    sampled.tokenizer = counting  # type: ignore[assignment]
    trainer.cancelled = lambda: counting.calls >= 1
    with pytest.raises(Cancelled):
        trainer._batch(sampled, trainer.texts[0][1], 16)
    assert counting.calls == 1  # not the batch's four sequences
    trainer.cancelled = lambda: True
    with pytest.raises(Cancelled):
        trainer.evaluate()
    assert trainer._heldouts == {}  # no held-out tokenizer was trained first


def test_recipes_past_the_bounds_are_refused(setup: tuple[Path, Path], tmp_path: Path) -> None:
    for changes, message in [
        ({"seq_len": MAX_SEQ_LEN + 1}, f"seq_len is {MAX_SEQ_LEN + 1}, above"),
        ({"corpus_seq_len": {"text": 10**9}}, "corpus seq_len for 'text' is 1000000000, above"),
        ({"batch": 512, "seq_len": 8192}, f"4194304 tokens a step, above {STEP_TOKENS}"),
        ({"batch": 3, "corpus_seq_len": {"text": 8000}}, "batch 3 x seq_len 8000"),
        ({"heldout_chars": 10**7}, f"heldout_chars is 10000000, above {MAX_HELDOUT_CHARS}"),
    ]:
        with pytest.raises(InputError, match=message):
            _config(**changes).check(["text"])
    _config(batch=2, seq_len=MAX_SEQ_LEN).check(["text"])  # at the bounds
    big = HyperConfig(width=4096, layers=24, heads=64)
    with pytest.raises(InputError, match=r"4,8\d\d,\d{3},\d{3} parameters: 7\d.\d GiB"):
        big.check(64 * 2**30)
    with pytest.raises(InputError, match="multiple of heads"):
        HyperConfig(width=30, heads=4).check()
    HyperConfig().check(64 * 2**20)  # the default network: 1.6M parameters, 25 MiB
    trainer = _trainer(setup, tmp_path)
    counted = sum(p.numel() for p in trainer.net.parameters())
    assert trainer.net.config.parameters() == counted  # the estimate is the count
    untied = HyperConfig(width=32, layers=1, heads=2, dim=16, tied=False)
    rows = torch.zeros(10, 16)
    assert untied.parameters() == sum(p.numel() for p in HyperNet(untied, rows, rows).parameters())
