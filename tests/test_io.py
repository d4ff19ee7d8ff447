from __future__ import annotations

import json
from pathlib import Path

import pytest
import tiny
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from hypernet.errors import InputError
from hypernet.files import atomic_folder
from hypernet.io import open_checkpoint, write_weights


@pytest.fixture(scope="module")
def untied(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.model_dir(tmp_path_factory.mktemp("untied"), tiny.byte_level(), tied=False)


def test_finds_embeddings_and_tie_flag(untied: Path, tmp_path: Path) -> None:
    ckpt = open_checkpoint(untied)
    assert ckpt.input_name == "model.embed_tokens.weight"
    assert ckpt.output_name == "lm_head.weight" and not ckpt.tied
    tied = open_checkpoint(tiny.model_dir(tmp_path, tiny.byte_level(), tied=True))
    assert tied.tied and tied.output_name is None


def test_streamed_copy_is_bit_exact_and_replaces_embeddings(untied: Path, tmp_path: Path) -> None:
    ckpt = open_checkpoint(untied)
    new_embed = torch.randn(17, 32)
    files = write_weights(ckpt, tmp_path, {ckpt.input_name: new_embed})
    assert [f.name for f in files] == ["model.safetensors"]
    written = load_file(files[0])
    original = load_file(untied / "model.safetensors")
    assert set(written) == set(original)
    for name, tensor in original.items():
        if name == ckpt.input_name:
            assert torch.equal(written[name], new_embed.to(tensor.dtype))
        else:
            assert torch.equal(written[name], tensor), name


def test_sharded_output_loads_with_transformers(untied: Path, tmp_path: Path) -> None:
    ckpt = open_checkpoint(untied)
    out = tmp_path / "sharded"
    out.mkdir()
    files = write_weights(ckpt, out, {}, shard_bytes=20_000)
    assert len(files) > 1
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(ckpt.tensors)
    (out / "config.json").write_text((untied / "config.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(out)
    reference = AutoModelForCausalLM.from_pretrained(untied)
    for (n1, p1), (_, p2) in zip(
        model.state_dict().items(), reference.state_dict().items(), strict=True
    ):
        assert torch.equal(p1, p2), n1


def test_refuses_pickle_weights(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not really a pickle")
    with pytest.raises(InputError, match="pickle"):
        open_checkpoint(tmp_path)


def test_no_identifiable_embeddings(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    save_file({"encoder.layer.0.weight": torch.zeros(2, 2)}, tmp_path / "model.safetensors")
    with pytest.raises(InputError, match="no identifiable input embedding"):
        open_checkpoint(tmp_path)


def test_not_a_model_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="config.json"):
        open_checkpoint(tmp_path)


def test_atomic_folder_leaves_nothing_on_failure(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_folder(out) as tmp:
        (tmp / "half.safetensors").write_bytes(b"x")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with atomic_folder(out) as tmp:
        (tmp / "done").write_text("ok")
    assert (out / "done").read_text() == "ok"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    with pytest.raises(InputError, match="already exists"), atomic_folder(out):
        pass
