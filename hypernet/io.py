"""Checkpoint I/O that never holds the whole model in memory.

Only the embedding matrices are read into memory (lazily, from safetensors). Every other tensor
is copied from the input file to the output shard one tensor at a time: we write the
safetensors header first (shapes and dtypes are known from the input headers), then stream
each tensor's bytes. Peak memory is the embedding matrices plus the largest single tensor.
Callers write into a folder from `files.atomic_folder`, so a failed or cancelled run leaves
nothing half-written.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from torch import Tensor

from .errors import InputError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
INPUT_NAMES = (
    "embed_tokens.weight", "wte.weight", "word_embeddings.weight", "embed_in.weight",
    "tok_embeddings.weight", "embedding.weight",
)  # fmt: skip
OUTPUT_NAMES = ("lm_head.weight", "embed_out.weight", "output.weight")
DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
SHARD_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class TensorInfo:
    name: str
    file: Path
    dtype: str  # safetensors dtype name, e.g. "BF16"
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        n = DTYPES[self.dtype].itemsize if self.dtype in DTYPES else 1
        for s in self.shape:
            n *= s
        return n


@dataclass
class Checkpoint:
    """A Hugging Face model folder, read lazily: headers now, tensors on demand."""

    path: Path
    config: dict
    tensors: dict[str, TensorInfo]
    input_name: str
    output_name: str | None  # None when the LM head is tied to the input embeddings

    @property
    def tied(self) -> bool:
        return self.output_name is None

    @property
    def parameters(self) -> int:
        return sum(math.prod(t.shape) for t in self.tensors.values())

    def read(self, name: str) -> Tensor:
        info = self.tensors[name]
        with safe_open(info.file, framework="pt") as f:
            return f.get_tensor(name)

    def embeddings(self, vocab_size: int) -> dict[str, Tensor]:
        """{"input": rows} and, when untied, {"output": rows}: the rows a tokenizer of
        `vocab_size` tokens can use (rows beyond it are padding)."""
        matrices = {"input": self.read(self.input_name)}
        if self.output_name is not None:
            matrices["output"] = self.read(self.output_name)
        rows = min(matrices["input"].shape[0], vocab_size)
        return {k: m[:rows] for k, m in matrices.items()}


def _read_header(file: Path) -> dict:
    with open(file, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        if size > 100 * 1024**2:
            raise InputError(f"{file.name} is not a safetensors file (header of {size} bytes)")
        return json.loads(f.read(size))


def safetensors_files(folder: Path, name: str) -> list[Path]:
    """The folder's safetensors weights; pickle-only folders are refused (loading runs code)."""
    files = sorted(Path(folder).glob("*.safetensors"))
    if files:
        return files
    if any(f.suffix in PICKLE_SUFFIXES for f in Path(folder).iterdir()):
        raise InputError(
            f"model {name!r} has only pickle weights, which are refused (they can run code); "
            "convert them to safetensors"
        )
    raise InputError(f"model {name!r} has no *.safetensors weights in {folder}")


def open_checkpoint(path: Path) -> Checkpoint:
    """Index the tensors of a model folder and find its embedding matrices."""
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise InputError(f"{path} has no config.json: not a Hugging Face model folder")
    try:
        config = json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{config_file} is unreadable: {e}") from None
    files = safetensors_files(path, str(path))
    tensors: dict[str, TensorInfo] = {}
    for file in files:
        try:
            header = _read_header(file)
        except (OSError, ValueError, struct.error) as e:
            raise InputError(f"{file} is not a readable safetensors file: {e}") from None
        for name, meta in header.items():
            if name != "__metadata__":
                tensors[name] = TensorInfo(name, file, meta["dtype"], tuple(meta["shape"]))
    input_name = _find(tensors, INPUT_NAMES)
    if input_name is None:
        raise InputError(f"{path}: no identifiable input embedding matrix among its tensors")
    output_name = _find(tensors, OUTPUT_NAMES)
    tie = config.get("tie_word_embeddings", True)  # transformers' default is tied
    if output_name is not None and tie:
        output_name = None  # a tied head saved anyway is the same matrix
    if output_name is None and not tie:
        raise InputError(f"{path}: config says the LM head is untied but no LM head tensor found")
    return Checkpoint(path, config, tensors, input_name, output_name)


def _find(tensors: dict[str, TensorInfo], suffixes: tuple[str, ...]) -> str | None:
    for suffix in suffixes:
        matches = [n for n in tensors if n == suffix or n.endswith("." + suffix)]
        matches = [n for n in matches if len(tensors[n].shape) == 2]
        if matches:
            return min(matches, key=len)
    return None


def _write_shard(
    file: Path, items: list[tuple[TensorInfo, Tensor | None]], metadata: dict[str, str]
) -> None:
    """Header first, then each tensor's bytes: replaced tensors from memory, others streamed."""
    header: dict[str, dict] = {"__metadata__": metadata}  # type: ignore[dict-item]
    offset = 0
    for info, _ in items:
        header[info.name] = {
            "dtype": info.dtype,
            "shape": list(info.shape),
            "data_offsets": [offset, offset + info.nbytes],
        }
        offset += info.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(file, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for info, tensor in items:
            if tensor is None:
                with safe_open(info.file, framework="pt") as src:
                    tensor = src.get_tensor(info.name)
            data = tensor.contiguous().reshape(-1).view(torch.uint8).numpy()
            assert data.nbytes == info.nbytes, f"{info.name}: size changed while writing"
            f.write(memoryview(data))
            del tensor, data


def write_weights(
    src: Checkpoint,
    out: Path,
    replaced: dict[str, Tensor],
    shard_bytes: int = SHARD_BYTES,
    progress: Callable[[float], None] | None = None,
) -> list[Path]:
    """Write every tensor of `src` to `out`, with `replaced` tensors (cast to the source dtype)
    standing in for the originals. Sharded with an index when above `shard_bytes`."""
    items: list[tuple[TensorInfo, Tensor | None]] = []
    for name, info in src.tensors.items():
        if name in replaced:
            t = replaced[name].to(DTYPES[info.dtype]).contiguous()
            items.append((TensorInfo(name, info.file, info.dtype, tuple(t.shape)), t))
        else:
            items.append((info, None))
    shards: list[list[tuple[TensorInfo, Tensor | None]]] = [[]]
    size = 0
    for item in items:
        if shards[-1] and size + item[0].nbytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(item)
        size += item[0].nbytes
    total = sum(i.nbytes for i, _ in items)
    names = (
        ["model.safetensors"]
        if len(shards) == 1
        else [f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors" for k in range(len(shards))]
    )
    done = 0
    for name, shard in zip(names, shards, strict=True):
        _write_shard(out / name, shard, {"format": "pt"})
        done += sum(i.nbytes for i, _ in shard)
        if progress:
            progress(done / max(1, total))
    if len(shards) > 1:
        index = {
            "metadata": {"total_size": total},
            "weight_map": {i.name: n for n, s in zip(names, shards, strict=True) for i, _ in s},
        }
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return [out / n for n in names]
