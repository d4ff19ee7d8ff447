from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

from hypernet.errors import InputError
from hypernet.network.config import TrainConfig
from hypernet.network.model import (
    CONFIG,
    PAD,
    Fingerprint,
    HyperConfig,
    HyperNet,
    Saved,
    load,
    pad_pieces,
    read_meta,
    save,
)

D, ROWS = 16, 50


def _net(tied: bool = True, seed: int = 0) -> tuple[HyperNet, torch.Tensor, torch.Tensor | None]:
    torch.manual_seed(seed)
    inp = torch.randn(ROWS, D) * 0.1 + 0.05
    out = None if tied else torch.randn(ROWS, D)
    config = HyperConfig(max_pieces=4, width=32, layers=1, heads=2, dim=D, tied=tied)
    return HyperNet(config, inp, out), inp, out


def test_shapes_tied_and_untied() -> None:
    pieces = pad_pieces([[1], [2, 3], [4, 5, 6, 7, 8]], 4)  # the last is cut to 4 pieces
    assert pieces.tolist()[2] == [4, 5, 6, 7] and pieces.tolist()[0] == [1, PAD, PAD, PAD]
    tied, _, _ = _net(tied=True)
    out = tied(pieces)
    assert set(out) == {"input"} and out["input"].shape == (3, D)
    untied, _, _ = _net(tied=False)
    out = untied(pieces)
    assert set(out) == {"input", "output"} and out["output"].shape == (3, D)


def test_step_zero_is_the_subword_mean() -> None:
    net, inp, out = _net(tied=False)
    spellings = [[3], [3, 7], [1, 2, 9], [ROWS + 65, 4]]  # the last holds a missing byte
    predicted = net(pad_pieces(spellings, 4))
    for k, ids in enumerate(spellings[:3]):
        assert torch.allclose(predicted["input"][k], inp[ids].mean(0), atol=1e-6)
        assert torch.allclose(predicted["output"][k], out[ids].mean(0), atol=1e-6)  # type: ignore[index]
    # a missing byte starts at the mean of all base rows
    fallback = torch.cat([inp, out], 1).mean(0)[:D]  # type: ignore[list-item]
    assert torch.allclose(predicted["input"][3], (fallback + inp[4]) / 2, atol=1e-6)


def test_training_moves_away_from_the_mean() -> None:
    net, inp, _ = _net()
    pieces = pad_pieces([[1, 2], [3, 4]], 4)
    target = torch.randn(2, D)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = ((net(pieces)["input"] - target) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_empty_spelling_is_refused() -> None:
    with pytest.raises(ValueError):
        pad_pieces([[1], []], 4)


def _saved(net: HyperNet, inp: torch.Tensor, tied: bool = True) -> Saved:
    return Saved(net.config, Fingerprint.of("LlamaForCausalLM", inp, tied), "tiny", {"steps": 3})


def test_save_load_round_trip(tmp_path: Path) -> None:
    net, inp, _ = _net()
    with torch.no_grad():
        net.heads["input"].weight.normal_()  # trained: no longer the mean
    save(net, _saved(net, inp), tmp_path)
    loaded, meta = load(tmp_path, "LlamaForCausalLM", inp, None)
    pieces = pad_pieces([[1, 2], [ROWS + 3]], 4)
    assert torch.equal(loaded(pieces)["input"], net.eval()(pieces)["input"])
    assert meta.recipe == {"steps": 3} and read_meta(tmp_path).base_model == "tiny"
    assert meta.config == net.config


def test_both_configs_round_trip_as_json(tmp_path: Path) -> None:
    net, inp, _ = _net()
    train = TrainConfig(lr=1e-3, max_minutes=2.5, corpus_weights={"code": 2.0}, copied_rows=True)
    save(net, replace(_saved(net, inp), train_config=train), tmp_path)
    raw = json.loads((tmp_path / CONFIG).read_text())
    assert raw["train_config"] == asdict(train) and raw["config"] == asdict(net.config)
    meta = read_meta(tmp_path)
    assert meta.train_config == train and meta.config == net.config


def test_meta_from_before_train_config_reads_it_from_the_recipe(tmp_path: Path) -> None:
    old = {  # as written before `train_config`: the settings beside the run's counters
        "config": {"max_pieces": 4, "width": 32, "layers": 1, "heads": 2, "dim": 16, "tied": True},
        "fingerprint": asdict(Fingerprint("LlamaForCausalLM", 50, 16, True, "0" * 64)),
        "base_model": "tiny",
        "recipe": {"lr": 1e-3, "copied_rows": True, "steps_done": 7, "a_dropped_setting": 1},
        "scores": {"held_out": []},
    }
    (tmp_path / CONFIG).write_text(json.dumps(old))
    meta = read_meta(tmp_path)
    assert meta.train_config == TrainConfig(lr=1e-3, copied_rows=True)
    assert meta.recipe["steps_done"] == 7 and meta.config.width == 32


def test_foreign_base_is_refused_fine_tune_warned(tmp_path: Path) -> None:
    net, inp, _ = _net()
    save(net, _saved(net, inp), tmp_path)
    with pytest.raises(InputError, match="another base model"):
        load(tmp_path, "LlamaForCausalLM", torch.randn(ROWS + 1, D), None)
    with pytest.raises(InputError, match="architecture"):
        load(tmp_path, "GPT2LMHeadModel", inp, None)
    with pytest.raises(InputError, match="tied"):
        load(tmp_path, "LlamaForCausalLM", inp, torch.randn(ROWS, D))
    with pytest.warns(UserWarning, match="fine-tune"):
        load(tmp_path, "LlamaForCausalLM", inp + 0.01, None)


def test_not_a_hypernet_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a hypernetwork"):
        read_meta(tmp_path)
    (tmp_path / "hypernet.json").write_text("{broken")
    with pytest.raises(InputError, match="not a valid"):
        read_meta(tmp_path)


def test_corrupt_weights_are_a_clear_error(tmp_path: Path) -> None:
    net, inp, _ = _net()
    save(net, _saved(net, inp), tmp_path)
    (tmp_path / "hypernet.safetensors").write_bytes(b"garbage")
    with pytest.raises(InputError, match="weights"):
        load(tmp_path, "LlamaForCausalLM", inp, None)
