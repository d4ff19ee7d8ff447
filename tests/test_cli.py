from __future__ import annotations

import json
from pathlib import Path

import pytest
import tiny

from service.cli import main


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.model_dir(tmp_path_factory.mktemp("base"), tiny.byte_level())


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("target")
    tiny.sentencepiece().save_pretrained(folder)
    return folder


def test_transplant_json_and_options(
    base: Path, target: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["transplant", "--model", str(base), "--tokenizer", str(target), "--method",
            "subword", "--out", str(tmp_path / "o"), "--option", "seed=3", "--json",
            "--quiet"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["method"] == "subword" and report["options"]["seed"] == 3
    assert (tmp_path / "o" / "model.safetensors").is_file()


def test_human_output_and_progress_bars(
    base: Path, target: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["transplant", "--model", str(base), "--tokenizer", str(target), "--method", "mean",
            "--out", str(tmp_path / "o")]  # fmt: skip
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"wrote {tmp_path / 'o'}") and "copied" in out
    assert "write" in err and "100%" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--option", "k"], "--option expects key=value"),
        (["--option", "nope=1"], "unknown method option"),
        (["--method", "omp"], "--donor"),
    ],
)
def test_bad_options_are_one_line_errors(
    extra: list[str], message: str, base: Path, target: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    argv = ["transplant", "--model", str(base), "--tokenizer", str(target),
            "--out", str(tmp_path / "o"), "--quiet", *extra]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_methods_and_bundled_lists(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["methods"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert {"hybrid", "subword", "subword-weighted", "knn", "omp", "mean", "gaussian"} <= set(names)
    assert main(["models", "bundled"]) == 0
    assert capsys.readouterr().out.split() == ["smollm2-135m"]


def test_eval_json(base: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = tmp_path / "t.txt"
    text.write_text("\n".join(tiny.TEXT))
    assert main(["eval", "--model", str(base), "--text", str(text), "--json", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["bytes"] == len(text.read_bytes())
    assert result["tokens_per_byte"] == pytest.approx(result["tokens"] / result["bytes"])
