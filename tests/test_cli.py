from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import tiny
from safetensors import safe_open

from hypernet.cli import given_fields
from hypernet.network import config as network_config
from hypernet.network.config import HyperConfig, TrainConfig
from service.cli import listening, main, parser


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
    argv = [
        "transplant",
        "--model",
        str(base),
        "--tokenizer",
        str(target),
        "--method",
        "subword",
        "--out",
        str(tmp_path / "o"),
        "--option",
        "seed=3",
        "--json",
        "--quiet",
    ]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["method"] == "subword" and report["options"]["seed"] == 3
    assert (tmp_path / "o" / "model.safetensors").is_file()


def test_human_output_and_progress_bars(
    base: Path, target: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "transplant",
        "--model",
        str(base),
        "--tokenizer",
        str(target),
        "--method",
        "mean",
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"wrote {tmp_path / 'o'}") and "copied" in out
    assert "write" in err and "100%" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--option", "k"], "--option expects key=value"),
        (["--option", "nope=1"], "unknown method option"),
        (["--method", "omp"], "needs a donor model"),
    ],
)
def test_bad_options_are_one_line_errors(
    extra: list[str],
    message: str,
    base: Path,
    target: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [
        "transplant",
        "--model",
        str(base),
        "--tokenizer",
        str(target),
        "--out",
        str(tmp_path / "o"),
        "--quiet",
        *extra,
    ]
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


def test_hypernet_train_list_show_predict(
    base: Path, target: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = tiny.corpus(tmp_path / "text.txt")
    out = tmp_path / "store" / "hn"
    argv = [
        "hypernet",
        "train",
        "--model",
        str(base),
        "--corpus",
        str(corpus),
        "--out",
        str(out),
        "--steps",
        "2",
        "--batch",
        "1",
        "--seq-len",
        "16",
        "--width",
        "32",
        "--layers",
        "1",
        "--heads",
        "2",
        "--quiet",
    ]
    assert main(argv) == 0
    assert "step 2" in capsys.readouterr().out
    assert main(argv) == 2  # the folder exists now
    assert "already exists" in capsys.readouterr().err
    resume = ["hypernet", "train", "--model", str(base), "--out", str(out), "--resume", "--quiet"]
    assert main([*resume, "--steps", "3", "--width", "64"]) == 2  # not the saved recipe
    assert "width 64 (saved 32)" in capsys.readouterr().err
    assert main([*resume, "--steps", "3"]) == 0  # no recipe flags: the saved one goes on
    assert "step 3" in capsys.readouterr().out

    assert main(["hypernet", "list", str(tmp_path / "store")]) == 0
    assert str(out) in capsys.readouterr().out
    assert main(["hypernet", "show", str(out)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["recipe"]["steps_done"] == 3 and shown["fingerprint"]["rows"] > 0
    assert shown["config"]["width"] == 32

    rows = tmp_path / "rows.safetensors"
    argv = [
        "hypernet",
        "predict",
        "--hypernet",
        str(out),
        "--model",
        str(base),
        "--token",
        " Fuchs",
        "--token",
        "über",
        "--out",
        str(rows),
    ]
    assert main(argv) == 0
    assert "input [2, 32]" in capsys.readouterr().out
    with safe_open(rows, framework="pt") as f:
        assert json.loads(f.metadata()["tokens"]) == [" Fuchs", "über"]

    argv = [
        "transplant",
        "--model",
        str(base),
        "--tokenizer",
        str(target),
        "--method",
        "hypernet",
        "--hypernet",
        str(out),
        "--out",
        str(tmp_path / "o"),
        "--quiet",
    ]
    assert main(argv) == 0


def test_hypernet_bad_input(base: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hypernet", "show", str(tmp_path)]) == 2
    assert "no hypernetwork" in capsys.readouterr().err
    small = tmp_path / "small.txt"
    small.write_text("too little text\n")
    argv = [
        "hypernet",
        "train",
        "--model",
        str(base),
        "--corpus",
        str(small),
        "--out",
        str(tmp_path / "hn"),
        "--quiet",
    ]
    assert main(argv) == 2
    assert "too small" in capsys.readouterr().err
    argv = [
        "hypernet",
        "predict",
        "--hypernet",
        str(tmp_path),
        "--model",
        str(base),
        "--out",
        str(tmp_path / "r.safetensors"),
    ]
    assert main(argv) == 2
    assert "no tokens" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--seq-len", "9000"], "seq_len is 9000, above the longest sequence, 8192"),
        (["--corpus-seq-len", "text=1000000000"], "corpus seq_len for 'text' is 1000000000"),
        (["--batch", "512", "--seq-len", "8192"], "4194304 tokens a step, above 16384"),
        (["--width", "1024", "--layers", "4", "--heads", "16"], "0.8 GiB with AdamW's state, over"),
        (["--width", "30", "--heads", "4"], "width 30 must be a multiple of heads 4"),
    ],
)
def test_hypernet_train_refuses_a_recipe_past_its_bounds(
    flags: list[str],
    message: str,
    base: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(network_config, "machine_memory", lambda: 2**29)
    corpus = tiny.corpus(tmp_path / "text.txt")
    out = tmp_path / "hn"
    argv = ["hypernet", "train", "--model", str(base), "--corpus", str(corpus), "--out", str(out)]
    assert main([*argv, "--quiet", *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tokengraft: error: ") and message in err, err
    assert not out.exists()  # nothing trained


def test_keys_and_a_public_serve_without_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data = ["--data-dir", str(tmp_path / "data")]
    assert main(["migrate", *data]) == 0
    assert main(["serve", "--host", "0.0.0.0", *data]) == 2
    assert "without API keys" in capsys.readouterr().err
    assert main(["keys", "create", "dashboard", "--scope", "read", *data]) == 0
    key = capsys.readouterr().out.strip()
    assert key.startswith("tg_")
    key_id = key.split("_")[1]
    assert main(["keys", "list", *data]) == 0
    listing = capsys.readouterr().out
    assert key_id in listing and "read" in listing and "active" in listing
    assert key not in listing
    assert main(["keys", "revoke", key_id, *data]) == 0
    assert main(["keys", "list", *data]) == 0
    assert "revoked" in capsys.readouterr().out
    assert main(["keys", "revoke", "nope", *data]) == 2


def test_recipe_flags_are_the_config_fields(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["hypernet", "train", "--help"])
    shown = capsys.readouterr().out
    for f in [*fields(TrainConfig), *fields(HyperConfig)]:
        flag = f.metadata.get("flag", "--" + f.name.replace("_", "-"))
        assert (flag in shown) == (f.name not in HyperConfig.FROM_BASE), f.name
    recipe = ["--negatives", "7", "--corpus-weight", "de=2", "--no-copied-rows", "--width", "64"]
    args = parser().parse_args(["hypernet", "train", "--model", "m", "--out", "o", *recipe])
    assert given_fields(TrainConfig, args) == {
        "negatives": 7,
        "copied_rows": False,
        "corpus_weights": {"de": 2.0},
    }
    assert given_fields(HyperConfig, args) == {"width": 64}


# Runs `tokengraft ARGV` in a fresh interpreter, which then must not have loaded torch.
LOADS_NO_MODEL_LIBRARY = """
import sys
from service.cli import main
try:
    status = main(sys.argv[1:])
except SystemExit as e:  # --help
    status = e.code
assert status == 0 and not {"torch", "transformers"} & set(sys.modules), sys.argv
"""


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["hypernet", "train", "--help"],
        ["remote", "submit", "--help"],
        ["keys", "list"],
        ["migrate"],
    ],
)
def test_parsing_and_service_commands_load_no_model_library(
    argv: list[str], tmp_path: Path
) -> None:
    data = [] if "--help" in argv else ["--data-dir", str(tmp_path)]
    command = [sys.executable, "-c", LOADS_NO_MODEL_LIBRARY, *argv, *data]
    subprocess.run(command, check=True, capture_output=True)


def test_the_api_processes_socket_gives_nodelay_connections() -> None:
    """`serve --processes N` binds the shared socket itself: a connection it accepts must get
    TCP_NODELAY from asyncio, as with one process (else a body waits ~40 ms on a delayed ACK)."""
    sock = listening("127.0.0.1", 0)

    async def accepted_nodelay() -> int:
        loop = asyncio.get_running_loop()
        got: asyncio.Future[int] = loop.create_future()

        class Accept(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                accepted = transport.get_extra_info("socket")
                got.set_result(accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        server = await loop.create_server(Accept, sock=sock)
        _, writer = await asyncio.open_connection(*sock.getsockname())
        try:
            return await asyncio.wait_for(got, 10)
        finally:
            writer.close()
            server.close()

    assert sock.proto == socket.IPPROTO_TCP
    assert asyncio.run(accepted_nodelay()) == 1
