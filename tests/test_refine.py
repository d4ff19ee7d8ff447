from __future__ import annotations

import json
from pathlib import Path

import pytest
import tiny
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from hypernet.align import Setup
from hypernet.errors import Cancelled, InputError
from hypernet.methods import MethodOptions, get_method
from hypernet.predict import predict
from hypernet.refine import RefineConfig, Refiner, Rows, load_frozen, trainable_rows
from hypernet.sources import load_tokenizer
from hypernet.transplant import (
    RefineRequest,
    TransplantRequest,
    refine_checkpoint,
    transplant,
)
from service.cli import main

WINDOW = 200


def _config(**kw: object) -> RefineConfig:
    return RefineConfig(**{"minutes": None, "steps": 12, "window_chars": WINDOW, **kw})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.model_dir(tmp_path_factory.mktemp("base"), tiny.byte_level(300), tied=True)


@pytest.fixture(scope="module")
def untied(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("untied")
    return tiny.model_dir(path, tiny.byte_level(300), tied=False, extra_rows=5)


@pytest.fixture(scope="module")
def new_tok(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("new")
    tiny.sentencepiece().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.corpus(tmp_path_factory.mktemp("text") / "train.txt", lines=300)


def _refiner(base: Path, new_tok: Path, text: Path, **kw: object) -> tuple[Refiner, Setup]:
    setup = Setup.load(base, load_tokenizer(new_tok))
    start, _ = predict(setup, get_method("subword"), MethodOptions())
    config = _config(**kw)
    mask = trainable_rows(setup.alignment, start["input"].shape[0], config.rows)
    model = load_frozen(base, torch.device("cpu"))
    refiner = Refiner(model, setup.base_tok, setup.new_tok, start, mask, [text.read_text()], config)
    return refiner, setup


def test_a_few_steps_lower_the_distillation_loss(base: Path, new_tok: Path, text: Path) -> None:
    refiner, _ = _refiner(base, new_tok, text, steps=25, lr=0.01)
    result = refiner.fit()
    assert result.steps == 25 and result.probe == "held-out"
    assert result.loss_after < result.loss_before


def test_probe_every_keeps_the_rows_with_the_best_probe_bits(
    base: Path, new_tok: Path, text: Path
) -> None:
    # a learning rate high enough to overshoot: the kept rows must still be the probe's best
    refiner, _ = _refiner(base, new_tok, text, steps=12, lr=0.3, probe_every=3, lm_weight=1.0)
    bits: dict[int, float] = {}  # step -> the probe's first score there: the rows as trained
    probe = refiner.probe

    def recording(*args: object) -> tuple[float, float]:
        scored = probe(*args)  # type: ignore[arg-type]
        bits.setdefault(refiner.step, scored[1])
        return scored

    refiner.probe = recording  # type: ignore[method-assign]
    result = refiner.fit()
    assert sorted(bits) == [0, 3, 6, 9, 12]
    assert result.best_step == min(bits, key=lambda step: bits[step])
    assert result.probe_bits_before == round(bits[0], 4)
    assert result.probe_bits_after == round(min(bits.values()), 4)
    # the rows the run ends on are the kept ones
    assert probe()[1] == pytest.approx(min(bits.values()), abs=1e-5)


def test_only_trainable_rows_move(base: Path, new_tok: Path, text: Path) -> None:
    for rows in ("new", "all"):
        refiner, setup = _refiner(base, new_tok, text, rows=rows)
        start = {k: getattr(refiner.rows, f"start_{k}").clone() for k in refiner.rows.names}
        refiner.fit()
        moved = (refiner.matrices()["input"] != start["input"]).any(1)
        copied = sorted(setup.alignment.copies)
        if rows == "new":
            assert not moved[copied].any()
            assert moved[setup.alignment.predict].all()
        else:
            assert moved[copied].any()


def test_rows_start_as_the_zero_shot_rows() -> None:
    start = {"input": torch.randn(10, 4), "output": torch.randn(10, 4)}
    mask = torch.tensor([True, False] * 5)
    rows = Rows(start, mask, rank=2)()
    assert all(torch.equal(rows[k], start[k]) for k in start)


def test_transplant_with_refine_keeps_the_body_bit_identical(
    untied: Path, new_tok: Path, text: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    ticks: list[tuple] = []
    report = transplant(
        TransplantRequest(
            str(untied),
            str(new_tok),
            out,
            "subword",
            eval_text=text,
            eval_bytes=3000,
            refine=_config(steps=4),
            refine_texts=[text],
        ),
        progress=lambda *a: ticks.append(a),
    )
    r = report.refine
    assert r is not None and r["steps"] == 4 and r["texts"] == ["train.txt"]
    assert r["text_bytes"] > 0 and r["trained_rows"] > 0
    assert {"before", "after", "ratio_before", "ratio_after"} <= set(r["eval"])
    assert r["eval"]["after"] == report.eval["after"]["bits_per_byte"]  # type: ignore[index]
    refine_ticks = [t for t in ticks if t[0] == "refine" and len(t) == 3]
    assert [t[2]["step"] for t in refine_ticks] == [1, 2, 3, 4]
    before, after = load_file(untied / "model.safetensors"), load_file(out / "model.safetensors")
    embeddings = {"model.embed_tokens.weight", "lm_head.weight"}
    assert set(before) == set(after)
    for name in set(before) - embeddings:
        assert torch.equal(before[name], after[name]), name
    saved = json.loads((out / "transplant_report.json").read_text())
    assert saved["refine"]["steps"] == 4 and "## Refinement" in (out / "README.md").read_text()
    AutoModelForCausalLM.from_pretrained(out).generate(
        torch.tensor([[1, 2, 3]]), max_new_tokens=3, do_sample=False
    )


def test_refine_an_existing_checkpoint(
    base: Path, new_tok: Path, text: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    zero_shot = tmp_path / "zs"
    transplant(TransplantRequest(str(base), str(new_tok), zero_shot, "subword"))
    out = tmp_path / "refined"
    argv = [
        "refine",
        "--model",
        str(zero_shot),
        "--teacher",
        str(base),
        "--text",
        str(text),
        "--out",
        str(out),
        "--steps",
        "3",
        "--eval-text",
        str(text),
        "--eval-bytes",
        "2000",
        "--json",
        "--quiet",
    ]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["refine"]["steps"] == 3 and report["method"] == "subword"
    assert report["refine"]["eval"]["before"] > 0 and report["eval"]["ratio"] > 0
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in zero_shot.iterdir())
    assert main(argv) == 2  # --out exists now


def test_bad_input_is_refused_before_any_work(
    base: Path, untied: Path, new_tok: Path, text: Path, tmp_path: Path
) -> None:
    short = tmp_path / "short.txt"
    short.write_text("too short for one window")
    out = tmp_path / "out"

    def run(texts: list[Path], config: RefineConfig) -> None:
        transplant(
            TransplantRequest(
                str(base), str(new_tok), out, "subword", refine=config, refine_texts=texts
            )
        )

    with pytest.raises(InputError, match="at least one text"):
        run([], _config())
    with pytest.raises(InputError, match="shorter than one window"):
        run([short], _config())
    with pytest.raises(InputError, match="minutes must be positive"):
        run([text], _config(minutes=0))
    with pytest.raises(InputError, match="cannot read"):
        run([tmp_path / "missing.txt"], _config())
    zero_shot = tmp_path / "zs"
    transplant(TransplantRequest(str(base), str(new_tok), zero_shot, "subword"))
    with pytest.raises(InputError, match="not the base model"):
        refine_checkpoint(RefineRequest(str(zero_shot), str(untied), [text], out, _config()))
    assert not out.exists()


def test_cancel_inside_refine_keeps_nothing(
    base: Path, new_tok: Path, text: Path, tmp_path: Path
) -> None:
    ticks: list[tuple] = []
    with pytest.raises(Cancelled, match="during refine"):
        transplant(
            TransplantRequest(
                str(base),
                str(new_tok),
                tmp_path / "out",
                "subword",
                refine=_config(steps=10_000),
                refine_texts=[text],
            ),
            progress=lambda *a: ticks.append(a),
            cancelled=lambda: sum(t[0] == "refine" and len(t) == 3 for t in ticks) >= 2,
        )
    assert list(tmp_path.iterdir()) == []
