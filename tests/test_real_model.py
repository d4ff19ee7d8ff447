"""The real bundled SmolLM2-135M through the command line: tokenizer, transplant, eval.

Slow (minutes on two CPU cores, most of it embedding SmolLM2's vocabulary once with
all-MiniLM-L6-v2); the converted model and the embeddings are cached under the repo's .cache/.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from hypernet.network.model import read_meta
from hypernet.network.store import SHIPPED
from hypernet.sources import resolve_model
from service.cli import main

CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CORPORA.is_dir(), reason="needs the shared corpora next to the repo"),
]


def _json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict:
    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def _german_transplant(german_bpe: Path) -> list[str]:
    """SmolLM2 onto the German BPE, scored on 3,000 bytes of German eval text."""
    args = ["--model", "smollm2-135m", "--tokenizer", str(german_bpe), "--json", "--quiet"]
    return [*args, "--eval-text", str(CORPORA / "de.eval.txt"), "--eval-bytes", "3000"]


@pytest.fixture(scope="module")
def german_bpe(tmp_path_factory: pytest.TempPathFactory, repo_cache: Path) -> Path:
    out = tmp_path_factory.mktemp("tok") / "de-8k"
    argv = [
        "tokenizer",
        "train",
        "--corpus",
        str(CORPORA / "de.train.txt"),
        "--kind",
        "bpe",
        "--vocab-size",
        "8000",
        "--like",
        "smollm2-135m",
        "--max-bytes",
        "400000",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(argv) == 0
    return out


def test_hybrid_transplant_of_smollm2_beats_the_mean_baseline(
    german_bpe: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], repo_cache: Path
) -> None:
    common = _german_transplant(german_bpe)
    hybrid = _json(
        capsys, ["transplant", *common, "--method", "hybrid", "--out", str(tmp_path / "hybrid")]
    )
    mean = _json(capsys, ["transplant", *common, "--method", "mean", "--out", str(tmp_path / "m")])

    assert hybrid["method"] == "hybrid" and hybrid["tied"]
    v = hybrid["vocab"]
    assert v["new_vocab_size"] == 8000 and v["copied"] > 2000 and v["specials_unmatched"] == 0
    e = hybrid["eval"]
    assert e["before"] == mean["eval"]["before"]
    assert 1.0 < e["before"]["bits_per_byte"] < 3.0
    # a 8k German vocabulary needs fewer tokens per byte than SmolLM2's English-centred 49k one
    assert e["after"]["tokens_per_byte"] < e["before"]["tokens_per_byte"]
    assert e["after"]["bits_per_byte"] < mean["eval"]["after"]["bits_per_byte"]
    assert e["ratio"] < 1.5

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "hybrid")
    tok = AutoTokenizer.from_pretrained(tmp_path / "hybrid")
    assert model.config.vocab_size == len(tok) == 8000
    chat = tok.apply_chat_template([{"role": "user", "content": "Hallo"}], tokenize=False)
    assert "<|im_start|>" in chat
    ids = tok("Der Hund", return_tensors="pt")
    generated = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert generated.shape[1] == ids["input_ids"].shape[1] + 8

    score = _json(
        capsys,
        [
            "eval",
            "--model",
            str(tmp_path / "hybrid"),
            "--text",
            str(CORPORA / "de.eval.txt"),
            "--max-bytes",
            "3000",
            "--json",
            "--quiet",
        ],
    )
    assert score["bits_per_byte"] == pytest.approx(e["after"]["bits_per_byte"], rel=1e-4)
    assert set(score) >= {"bits_per_byte", "tokens_per_byte", "bytes"}


def test_a_fresh_install_ships_a_hypernetwork_for_smollm2_and_uses_it(
    german_bpe: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    repo_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TOKENGRAFT_HYPERNETS", str(tmp_path / "empty-store"))
    capsys.readouterr()
    assert main(["hypernet", "list"]) == 0
    listed = capsys.readouterr().out
    assert "shipped/smollm2-135m  base smollm2-135m" in listed
    cuts = read_meta(SHIPPED / "smollm2-135m").recipe["cut_weights"]
    assert {"like", "llama3", "qwen", "metaspace", "gpt2"} <= cuts.keys()  # other families' cuts

    common = _german_transplant(german_bpe)
    default = _json(capsys, ["transplant", *common, "--out", str(tmp_path / "default")])
    assert (default["method"], default["hypernet"]) == ("hypernet+hybrid", "smollm2-135m")
    assert "fingerprint matches" in default["method_choice"]
    assert default["options"]["hypernet_copied"] is True  # it was trained with copied rows
    hybrid = _json(
        capsys, ["transplant", *common, "--method", "hybrid", "--out", str(tmp_path / "hybrid")]
    )
    assert default["eval"]["ratio"] < hybrid["eval"]["ratio"]


def test_cli_bad_input_is_one_line_and_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], repo_cache: Path
) -> None:
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{ corrupt")
    argv = [
        "transplant",
        "--model",
        "smollm2-135m",
        "--tokenizer",
        str(bad),
        "--out",
        str(tmp_path / "out"),
        "--quiet",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tokengraft: error:") and "\n" not in err
    assert not (tmp_path / "out").exists()
    unknown = [
        "transplant",
        "--model",
        "smollm2-135m",
        "--tokenizer",
        "smollm2-135m",
        "--method",
        "nope",
        "--out",
        str(tmp_path / "out"),
        "--quiet",
    ]
    assert main(unknown) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err
    assert main(["eval", "--model", str(tmp_path / "missing"), "--text", str(bad)]) == 2


def test_refine_on_smollm2_lowers_the_distillation_loss_and_keeps_the_body(
    german_bpe: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], repo_cache: Path
) -> None:
    out = tmp_path / "refined"
    argv = [
        "transplant",
        "--model",
        "smollm2-135m",
        "--tokenizer",
        str(german_bpe),
        "--method",
        "subword",
        "--out",
        str(out),
        "--refine-text",
        str(CORPORA / "de.train.txt"),
        "--refine-steps",
        "12",
        "--eval-text",
        str(CORPORA / "de.eval.txt"),
        "--eval-bytes",
        "3000",
        "--json",
        "--quiet",
    ]
    report = _json(capsys, argv)
    r = report["refine"]
    assert r["steps"] == 12 and r["rows"] == "new" and r["probe"] == "held-out"
    assert r["trained_rows"] == report["vocab"]["predicted"]
    assert r["loss_after"] < r["loss_before"]
    assert r["eval"]["after"] == report["eval"]["after"]["bits_per_byte"]
    base = load_file(resolve_model("smollm2-135m") / "model.safetensors")
    refined = load_file(out / "model.safetensors")
    assert all(torch.equal(base[k], refined[k]) for k in base if "embed_tokens" not in k)
