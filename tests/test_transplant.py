from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import tiny
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from hypernet.align import align
from hypernet.errors import Cancelled, InputError
from hypernet.hidden import mean_hidden
from hypernet.methods import METHODS
from hypernet.network.predict import Predictor
from hypernet.transplant import TransplantRequest, transplant
from hypernet.vocab import load_vocab


@pytest.fixture(scope="module")
def base_tied(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.model_dir(tmp_path_factory.mktemp("tied"), tiny.byte_level(), tied=True)


@pytest.fixture(scope="module")
def base_untied(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("untied")
    return tiny.model_dir(path, tiny.byte_level(), tied=False, extra_rows=13)


@pytest.fixture(scope="module")
def sp_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sp")
    tiny.sentencepiece().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def wp_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("wp")
    tiny.wordpiece().save_pretrained(path)
    return path / "tokenizer.json"  # a bare tokenizer.json file works too


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _embeddings(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path / "model.safetensors")


@pytest.mark.parametrize("tied", [True, False])
def test_shift_lowers_only_the_predicted_head_rows(
    tied: bool, base_tied: Path, base_untied: Path, sp_tokenizer: Path, tmp_path: Path
) -> None:
    base = base_tied if tied else base_untied
    rows = {}
    for nats in (0.0, 2.0):
        out = tmp_path / f"shift-{nats}"
        options = {"shift": nats}
        transplant(TransplantRequest(str(base), str(sp_tokenizer), out, "subword", options=options))
        rows[nats] = _embeddings(out)
    model = AutoModelForCausalLM.from_pretrained(base)
    alignment = align(
        load_vocab(AutoTokenizer.from_pretrained(base)),
        load_vocab(AutoTokenizer.from_pretrained(sp_tokenizer)),
        model.get_input_embeddings().weight.shape[0],
    )
    head = "model.embed_tokens.weight" if tied else "lm_head.weight"
    mu = mean_hidden(base, AutoTokenizer.from_pretrained(base))
    drop = (rows[0.0][head] - rows[2.0][head]) @ mu
    predicted = torch.zeros(len(drop), dtype=torch.bool)
    predicted[alignment.predict] = True
    assert torch.allclose(drop[predicted], torch.tensor(2.0), atol=1e-4)
    assert (drop[~predicted] == 0).all()  # copies, specials and padding rows stay
    if not tied:  # what the model reads is unchanged
        name = "model.embed_tokens.weight"
        assert torch.equal(rows[0.0][name], rows[2.0][name])


def test_tied_transplant_loads_generates_and_copies(
    base_tied: Path, sp_tokenizer: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    report = transplant(TransplantRequest(str(base_tied), str(sp_tokenizer), out, "subword"))
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert model.config.vocab_size == len(tok) == report.vocab["new_vocab_size"]
    assert model.config.tie_word_embeddings and report.tied
    assert (
        model.get_output_embeddings().weight.data_ptr()
        == model.get_input_embeddings().weight.data_ptr()
    )
    ids = tok("The quick brown fox", return_tensors="pt")
    generated = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert generated.shape[1] == ids["input_ids"].shape[1] + 5

    base_w = _embeddings(base_tied)["model.embed_tokens.weight"]
    new_w = _embeddings(out)["model.embed_tokens.weight"]
    base_vocab = load_vocab(AutoTokenizer.from_pretrained(base_tied))
    new_vocab = load_vocab(tok)
    alignment = align(base_vocab, new_vocab, len(base_vocab))
    assert report.vocab["copied"] == len(alignment.copies) > 0
    for i, j in alignment.copies.items():
        assert torch.equal(new_w[i], base_w[j])
    for i, j in alignment.specials.items():  # <s> -> <|im_start|> (bos), </s> -> <|im_end|> (eos)
        assert torch.equal(new_w[i], base_w[j])
    predicted = sorted(set(range(len(new_vocab))) - set(alignment.copies) - set(alignment.specials))
    assert predicted and not (new_w[predicted] == 0).all(dim=1).any(), "no row is left at zero"
    assert model.config.bos_token_id == tok.bos_token_id
    assert (out / "README.md").read_text().startswith("---")
    written = json.loads((out / "transplant_report.json").read_text())
    assert written["vocab"] == report.vocab
    assert set(written["timings"]) >= {"resolve", "align", "predict", "write"}


def test_untied_padded_model_predicts_head_separately(
    base_untied: Path, wp_tokenizer: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    report = transplant(TransplantRequest(str(base_untied), str(wp_tokenizer), out, "subword"))
    assert not report.tied
    old, new = _embeddings(base_untied), _embeddings(out)
    n_new = report.vocab["new_vocab_size"]
    assert new["model.embed_tokens.weight"].shape == (n_new, 32)
    assert new["lm_head.weight"].shape == (n_new, 32)
    base_tok = AutoTokenizer.from_pretrained(base_untied)
    alignment = align(load_vocab(base_tok), load_vocab(AutoTokenizer.from_pretrained(out)), 300)
    i, j = next(iter(alignment.copies.items()))
    assert torch.equal(new["lm_head.weight"][i], old["lm_head.weight"][j])
    assert torch.equal(new["model.embed_tokens.weight"][i], old["model.embed_tokens.weight"][j])
    assert report.vocab["specials_unmatched"] == 1  # [MASK] has no counterpart in the base
    assert "lowercases text: cased forms share one token" in report.new_tokenizer["normalization"]
    model = AutoModelForCausalLM.from_pretrained(out)
    assert not model.config.tie_word_embeddings
    new_tok = AutoTokenizer.from_pretrained(out)
    assert model.config.bos_token_id == new_tok.cls_token_id  # no bos: [CLS] opens a sequence
    assert model.config.eos_token_id == new_tok.sep_token_id
    assert model.generation_config.eos_token_id == new_tok.sep_token_id
    assert (out.stat().st_mode & 0o777) == 0o777 & ~_umask()


def test_chat_template_follows_roles(base_tied: Path, wp_tokenizer: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    transplant(TransplantRequest(str(base_tied), str(wp_tokenizer), out, "mean"))
    template = AutoTokenizer.from_pretrained(out).chat_template
    assert "[CLS]" in template and "[SEP]" in template and "<|im_start|>" not in template


@pytest.fixture(scope="module")
def tied_hypernet(base_tied: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.hypernet(base_tied, tmp_path_factory.mktemp("hn") / "hypernet")


@pytest.mark.parametrize("method", sorted(set(METHODS) - {"omp"}))
def test_every_method_runs(
    method: str, base_tied: Path, sp_tokenizer: Path, tied_hypernet: Path, tmp_path: Path
) -> None:
    hypernet = str(tied_hypernet) if method.startswith("hypernet") else None
    report = transplant(
        TransplantRequest(
            str(base_tied), str(sp_tokenizer), tmp_path / "o", method, hypernet=hypernet
        )
    )
    w = _embeddings(tmp_path / "o")["model.embed_tokens.weight"]
    assert torch.isfinite(w).all() and w.shape[0] == report.vocab["new_vocab_size"]


def test_omp_through_a_donor(base_tied: Path, sp_tokenizer: Path, tmp_path: Path) -> None:
    donor = tiny.model_dir(tmp_path / "donor", tiny.sentencepiece())
    out = tmp_path / "out"
    report = transplant(
        TransplantRequest(str(base_tied), str(sp_tokenizer), out, "omp", donor=str(donor))
    )
    assert report.vocab["mean_fallback"] < report.vocab["predicted"]
    with pytest.raises(InputError, match="needs a donor model"):
        transplant(TransplantRequest(str(base_tied), str(sp_tokenizer), tmp_path / "x", "omp"))


def test_eval_report(base_tied: Path, sp_tokenizer: Path, tmp_path: Path) -> None:
    text = tmp_path / "eval.txt"
    text.write_text("\n".join(tiny.TEXT[:6]))
    report = transplant(
        TransplantRequest(
            str(base_tied), str(sp_tokenizer), tmp_path / "o", "subword", eval_text=text
        )
    )
    e = report.eval
    assert e is not None and e["bytes"] == len(text.read_bytes())
    assert e["before"]["bits_per_byte"] > 0 and e["after"]["bits_per_byte"] > 0
    assert e["ratio"] == pytest.approx(
        e["after"]["bits_per_byte"] / e["before"]["bits_per_byte"], abs=1e-3
    )
    assert 0 < e["copied_share"] <= 1 and e["copied_share"] + e["predicted_share"] == pytest.approx(
        1
    )
    assert "evaluate" in report.timings
    assert report.options["shift"] == 0.0  # resolved: only hybrid shifts unless asked


def test_bad_input_writes_nothing(base_tied: Path, sp_tokenizer: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(InputError, match="unknown method"):
        transplant(TransplantRequest(str(base_tied), str(sp_tokenizer), out, "nope"))
    with pytest.raises(InputError, match="unknown method option"):
        transplant(TransplantRequest(str(base_tied), str(sp_tokenizer), out, options={"kk": 1}))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError):
        transplant(TransplantRequest(str(base_tied), str(bad), out, "mean"))
    with pytest.raises(InputError):
        transplant(TransplantRequest(str(tmp_path / "missing"), str(sp_tokenizer), out, "mean"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json"]
    out.mkdir()
    with pytest.raises(InputError, match="already exists"):
        transplant(TransplantRequest(str(base_tied), str(sp_tokenizer), out, "mean"))


def test_cancel_keeps_nothing(base_tied: Path, sp_tokenizer: Path, tmp_path: Path) -> None:
    seen: list[str] = []

    def progress(stage: str, fraction: float) -> None:
        seen.append(stage)

    with pytest.raises(Cancelled):
        transplant(
            TransplantRequest(str(base_tied), str(sp_tokenizer), tmp_path / "out", "mean"),
            progress=progress,
            cancelled=lambda: "write" in seen,
        )
    assert list(tmp_path.iterdir()) == []


def test_cancel_stops_inside_a_long_stage(
    base_tied: Path, sp_tokenizer: Path, tmp_path: Path
) -> None:
    text = tiny.corpus(tmp_path / "eval.txt", lines=400)
    ticks: list[tuple[str, float]] = []
    request = TransplantRequest(
        str(base_tied), str(sp_tokenizer), tmp_path / "out", "mean", eval_text=str(text)
    )
    with pytest.raises(Cancelled, match="during evaluate"):
        transplant(
            request,
            progress=lambda stage, fraction: ticks.append((stage, fraction)),
            cancelled=lambda: any(s == "evaluate" and 0 < f < 1 for s, f in ticks),
        )
    assert ("evaluate", 1.0) not in ticks  # stopped at the first tick, not at the stage's end
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.txt"]


def test_hypernet_rows_match_the_predictor(
    base_tied: Path, sp_tokenizer: Path, tied_hypernet: Path, tmp_path: Path
) -> None:
    out = tmp_path / "o"
    request = TransplantRequest(
        str(base_tied), str(sp_tokenizer), out, "hypernet", hypernet=str(tied_hypernet)
    )
    report = transplant(request)
    assert report.hypernet == str(tied_hypernet)
    assert json.loads((out / "transplant_report.json").read_text())["hypernet"] == report.hypernet
    new = load_vocab(AutoTokenizer.from_pretrained(sp_tokenizer))
    base = load_vocab(AutoTokenizer.from_pretrained(base_tied))
    alignment = align(base, new, len(base))
    rows = Predictor.open(tied_hypernet, str(base_tied)).predict(
        [new.surfaces[i] for i in alignment.predict]  # type: ignore[misc]
    )["input"]
    w = _embeddings(out)["model.embed_tokens.weight"]
    assert torch.allclose(w[alignment.predict], rows, atol=1e-6)


def test_hypernet_method_needs_a_hypernet(
    base_tied: Path, sp_tokenizer: Path, tmp_path: Path
) -> None:
    out = tmp_path / "o"
    with pytest.raises(InputError, match="needs a hypernetwork"):
        transplant(TransplantRequest(str(base_tied), str(sp_tokenizer), out, "hypernet"))
    with pytest.raises(InputError, match="no hypernetwork"):
        transplant(
            TransplantRequest(
                str(base_tied), str(sp_tokenizer), out, "hypernet", hypernet=str(tmp_path)
            )
        )
    assert not out.exists()


def test_hypernet_for_another_model_is_refused(
    base_untied: Path, sp_tokenizer: Path, tied_hypernet: Path, tmp_path: Path
) -> None:
    out = tmp_path / "o"
    request = TransplantRequest(
        str(base_untied), str(sp_tokenizer), out, "hypernet", hypernet=str(tied_hypernet)
    )
    with pytest.raises(InputError, match="another base model"):
        transplant(request)
    assert not out.exists()


def test_default_method_takes_a_hypernetwork_made_for_the_base(
    base_tied: Path, base_untied: Path, sp_tokenizer: Path, tied_hypernet: Path, tmp_path: Path
) -> None:
    roots = [tmp_path / "empty", tied_hypernet.parent]
    found = transplant(
        TransplantRequest(str(base_tied), str(sp_tokenizer), tmp_path / "a", hypernets=roots)
    )
    assert (found.method, found.hypernet) == ("hypernet+hybrid", tied_hypernet.name)
    assert "fingerprint matches" in found.method_choice
    card = (tmp_path / "a" / "README.md").read_text()
    assert "fingerprint matches" in card and f"hypernetwork `{tied_hypernet.name}`" in card
    other = transplant(
        TransplantRequest(str(base_untied), str(sp_tokenizer), tmp_path / "b", hypernets=roots)
    )
    assert (other.method, other.hypernet) == ("hybrid", None)
    assert "no hypernetwork was trained for this base model" in other.method_choice
    asked = transplant(
        TransplantRequest(
            str(base_tied), str(sp_tokenizer), tmp_path / "c", "subword", hypernets=roots
        )
    )
    assert (asked.method, asked.hypernet, asked.method_choice) == ("subword", None, "asked for")


def test_copied_rows_come_from_a_network_trained_for_them(
    base_tied: Path, sp_tokenizer: Path, tmp_path: Path
) -> None:
    net = tiny.hypernet(base_tied, tmp_path / "hn", steps=3, copied_rows=True, lr=1e-2, warmup=1)
    base_w = _embeddings(base_tied)["model.embed_tokens.weight"]
    new = load_vocab(AutoTokenizer.from_pretrained(sp_tokenizer))
    copies = align(load_vocab(AutoTokenizer.from_pretrained(base_tied)), new, len(base_w)).copies
    new_ids, base_ids = list(copies), list(copies.values())
    for option, same in ((None, False), (False, True)):
        out = tmp_path / f"o{option}"
        options = {} if option is None else {"hypernet_copied": option}
        report = transplant(
            TransplantRequest(
                str(base_tied), str(sp_tokenizer), out, "hypernet", options, hypernet=str(net)
            )
        )
        assert report.options["hypernet_copied"] is (not same)
        w = _embeddings(out)["model.embed_tokens.weight"]
        assert torch.equal(w[new_ids], base_w[base_ids]) is same


@pytest.mark.parametrize("family", ["llama3_like", "qwen3_like", "gemma3_like", "gapped"])
def test_real_family_structures_transplant_load_generate_and_round_trip(
    family: str, base_tied: Path, tmp_path: Path
) -> None:
    """Byte-level and `▁`/byte-fallback targets, placeholders and added tokens included, and
    ids with a gap below the specials (a row for every id up to the highest)."""
    folder = tmp_path / "tok"
    getattr(tiny, family)().save_pretrained(folder)
    out = tmp_path / "out"
    report = transplant(TransplantRequest(str(base_tied), str(folder), out, "hybrid"))
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    text = "Grüße aus München, 12345 Füchse!\n\n  def hello(name):"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    top = max(tok.get_vocab().values())
    assert model.config.vocab_size == top + 1 == report.vocab["new_vocab_size"]
    assert tok.decode([top]) == tok.convert_ids_to_tokens(top)  # the highest id round-trips
    assert model(torch.tensor([[top, 0]])).logits.shape == (1, 2, top + 1)
    ids = tok("The quick brown fox", return_tensors="pt")
    assert model.generate(**ids, max_new_tokens=3, do_sample=False).shape[1] == (
        ids["input_ids"].shape[1] + 3
    )
    new_vocab, base_vocab = load_vocab(tok), load_vocab(AutoTokenizer.from_pretrained(base_tied))
    alignment = align(base_vocab, new_vocab, len(base_vocab))
    assert report.vocab["copied"] == len(alignment.copies) > 50  # words match across families
    assert report.vocab["unused"] == len(new_vocab.unused)
    base_w = _embeddings(base_tied)["model.embed_tokens.weight"]
    new_w = _embeddings(out)["model.embed_tokens.weight"]
    for i, j in alignment.copies.items():
        assert torch.equal(new_w[i], base_w[j])
    specials_mean = base_w[base_vocab.special_ids()].mean(0)
    for i in new_vocab.unused:
        assert torch.allclose(new_w[i], specials_mean)


def test_bf16_base_writes_bf16(sp_tokenizer: Path, tmp_path: Path) -> None:
    """A 262k x d matrix is not written at twice its size: the base model's dtype is kept."""
    base = tiny.model_dir(tmp_path / "base", tiny.byte_level())
    model = AutoModelForCausalLM.from_pretrained(base).to(torch.bfloat16)
    model.save_pretrained(base)
    transplant(TransplantRequest(str(base), str(sp_tokenizer), tmp_path / "out", "subword"))
    written = _embeddings(tmp_path / "out")
    assert {t.dtype for t in written.values()} == {torch.bfloat16}
