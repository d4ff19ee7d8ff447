from __future__ import annotations

import json
from pathlib import Path

import pytest
import tiny
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from hypernet.errors import InputError
from hypernet.sources import (
    bundled_embedder,
    import_gguf,
    load_tokenizer,
    resolve_model,
    resolve_tokenizer,
)


@pytest.fixture()
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No hub traffic, and an empty hub and tokengraft cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("TOKENGRAFT_CACHE", str(tmp_path / "cache"))


def test_local_folder_resolves_to_itself(tmp_path: Path) -> None:
    folder = tiny.model_dir(tmp_path / "m", tiny.byte_level())
    assert resolve_model(str(folder)) == folder
    assert resolve_tokenizer(str(folder)) == folder
    assert len(load_tokenizer(folder)) == len(tiny.byte_level())


@pytest.mark.usefixtures("offline")
def test_missing_and_unknown_models_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such folder"):
        resolve_model(str(tmp_path / "nope"))
    with pytest.raises(InputError, match="not found: not a folder, a bundled name"):
        resolve_model("no-such-org/no-such-model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no config.json"):
        resolve_model(str(tmp_path / "empty"))
    with pytest.raises(InputError, match="not found"):
        resolve_tokenizer("no-such-org/no-such-tokenizer")
    (tmp_path / "tokenizer.model").write_bytes(b"")
    with pytest.raises(InputError, match="is a file"):
        resolve_model(str(tmp_path / "tokenizer.model"))
    with pytest.raises(InputError, match="neither a tokenizer.json file nor a folder"):
        resolve_tokenizer(str(tmp_path / "tokenizer.model"))


def test_pickle_only_weights_are_refused(tmp_path: Path) -> None:
    folder = tiny.model_dir(tmp_path / "m", tiny.byte_level())
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(InputError, match="pickle weights"):
        resolve_model(str(folder))


def test_corrupt_tokenizer_json_is_an_input_error(tmp_path: Path) -> None:
    folder = tiny.model_dir(tmp_path / "m", tiny.byte_level())
    file = folder / "tokenizer.json"
    file.write_text(file.read_text()[:200])
    for path in (folder, file):
        with pytest.raises(InputError, match="not a valid tokenizer.json") as info:
            load_tokenizer(path)
        assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="not a valid tokenizer.json"):
        resolve_tokenizer(str(folder))


def test_bare_tokenizer_json_loads(tmp_path: Path) -> None:
    folder = tiny.model_dir(tmp_path / "m", tiny.byte_level())
    file = folder / "tokenizer.json"
    assert resolve_tokenizer(str(file)) == file
    text = "Hello wörld"
    assert load_tokenizer(file)(text).input_ids == load_tokenizer(folder)(text).input_ids


def test_bundled_embedder_has_safetensors_weights() -> None:
    folder = bundled_embedder()
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert load_tokenizer(folder)("hello world").input_ids[0] == 101  # [CLS]


def test_import_gguf_refuses_a_missing_file_and_an_existing_output(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        import_gguf(tmp_path / "missing.gguf", tmp_path / "out")
    gguf = tmp_path / "x.gguf"
    gguf.write_bytes(b"GGUF\x03\x00")
    (tmp_path / "out").mkdir()
    with pytest.raises(InputError, match="already exists"):
        import_gguf(gguf, tmp_path / "out")
    with pytest.raises(InputError, match="cannot read GGUF"):
        import_gguf(gguf, tmp_path / "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "x.gguf"]  # no leftovers


@pytest.mark.slow
def test_bundled_smollm2_converts_once_and_generates(repo_cache: Path) -> None:
    folder = resolve_model("smollm2-135m")
    assert folder.is_relative_to(repo_cache)
    assert resolve_model("smollm2-135m") == folder  # reused, not rebuilt
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (1, 2, 2)
    assert "chat_template" in json.loads((folder / "tokenizer_config.json").read_text())

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert model.config.vocab_size == len(tokenizer) == 49152
    assert model.config.tie_word_embeddings
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    text = "Hello wörld <|im_start|>"
    assert tokenizer.decode(tokenizer(text).input_ids) == text

    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.inference_mode():
        out = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, prompt["input_ids"].shape[1] :])


@pytest.mark.usefixtures("offline")
def test_cached_hub_id_resolves_offline(tmp_path: Path) -> None:
    """A hub id whose snapshot is in the local hub cache works with no network."""
    repo = tmp_path / "hub" / "models--acme--tiny-llama"
    snapshot = repo / "snapshots" / ("0" * 40)
    tiny.model_dir(snapshot, tiny.byte_level())
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    assert resolve_model("acme/tiny-llama") == snapshot
    assert (resolve_tokenizer("acme/tiny-llama") / "tokenizer.json").is_file()
