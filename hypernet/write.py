"""Write: the new checkpoint's files, loadable by `transformers` as is.

The weights are streamed tensor by tensor (`io.write_weights`) with the new embedding
matrices in place of the old; config.json and generation_config.json name the new
tokenizer's special-token ids; the tokenizer is saved with a chat template whose special
tokens are the new tokenizer's own. The caller writes into a folder from `atomic_folder`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from torch import Tensor
from transformers import PreTrainedTokenizerFast

from .align import Alignment, Setup
from .io import Checkpoint, write_weights
from .vocab import Vocab


def write_checkpoint(
    folder: Path, setup: Setup, matrices: dict[str, Tensor], progress: Callable[[float], None]
) -> None:
    """The base checkpoint with `matrices` for its embeddings, and the new tokenizer."""
    ckpt, new_tok = setup.ckpt, setup.new_tok
    write_weights(ckpt, folder, replaced(ckpt, matrices), progress=progress)
    write_configs(ckpt, new_tok, len(matrices["input"]), folder)
    new_tok.chat_template = chat_template(
        setup.base_tok, new_tok, setup.base_vocab, setup.new_vocab, setup.alignment
    )
    new_tok.save_pretrained(folder)


def rewrite_checkpoint(
    src: Checkpoint, folder: Path, matrices: dict[str, Tensor], progress: Callable[[float], None]
) -> None:
    """`src` with new embedding rows and every other file as it was (a refined transplant)."""
    write_weights(src, folder, replaced(src, matrices), progress=progress)
    for file in src.path.iterdir():
        if file.is_file() and not file.name.startswith("model"):
            shutil.copyfile(file, folder / file.name)


def replaced(ckpt: Checkpoint, matrices: dict[str, Tensor]) -> dict[str, Tensor]:
    """The checkpoint's embedding tensors by name, for `write_weights`."""
    out = {ckpt.input_name: matrices["input"]}
    if ckpt.output_name is not None:
        out[ckpt.output_name] = matrices["output"]
    return out


def chat_template(
    base_tok: PreTrainedTokenizerFast,
    new_tok: PreTrainedTokenizerFast,
    base: Vocab,
    new: Vocab,
    alignment: Alignment,
) -> str | None:
    """The new tokenizer's template, or the base one with each special token's spelling
    replaced by the new token that took its role."""
    if new_tok.chat_template:
        return new_tok.chat_template
    template = base_tok.chat_template
    if not template or not isinstance(template, str):
        return None

    def rank(i: int, j: int) -> int:  # same role first; pad only when nothing else took it
        role = new.special_roles.get(i)
        return 0 if role == base.special_roles.get(j) else 2 if role == "pad" else 1

    takers: dict[int, int] = {}
    for i, j in sorted(alignment.specials.items()):
        if j not in takers or rank(i, j) < rank(takers[j], j):
            takers[j] = i
    new_vocab = new_tok.get_vocab()
    for j, i in takers.items():
        if base.tokens[j] not in new_vocab:
            template = template.replace(base.tokens[j], new.tokens[i])
    return template


def _first_id(tok: PreTrainedTokenizerFast, *attributes: str) -> int | None:
    for attr in attributes:
        value = getattr(tok, attr, None)
        if value is not None:
            return int(value)
    return None


def write_configs(ckpt: Checkpoint, tok: PreTrainedTokenizerFast, rows: int, out: Path) -> None:
    """`rows` is the embedding's, not `len(tok)`: ids may leave gaps (`vocab.check_ids`)."""
    config = dict(ckpt.config)
    config["vocab_size"] = rows
    config["tie_word_embeddings"] = ckpt.tied
    # A BERT-style vocabulary opens with [CLS] and closes with [SEP]: they stand in for bos/eos.
    ids = {
        "bos_token_id": _first_id(tok, "bos_token_id", "cls_token_id"),
        "eos_token_id": _first_id(tok, "eos_token_id", "sep_token_id"),
        "pad_token_id": tok.pad_token_id,
    }
    config.update(ids)
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    generation_file = ckpt.path / "generation_config.json"
    generation = json.loads(generation_file.read_text()) if generation_file.is_file() else {}
    generation.update(ids)  # the base model's ids mean other tokens now, even where None
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
