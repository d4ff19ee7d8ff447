"""FOCUS as its README uses it, run by `bench/peers.py` with the FOCUS environment's Python.

python peer_focus.py BASE TOKENIZER TRAIN_TEXT OUT

FOCUS returns an embedding matrix; the checkpoint is the base model with that matrix (tied
models: the head follows) and the target tokenizer, saved with `save_pretrained`, which is how
its users make one. Imports only FOCUS's own environment (never tokengraft).
"""

from __future__ import annotations

import sys

import torch
from deepfocus import FOCUS
from transformers import AutoModelForCausalLM, AutoTokenizer


def main(base: str, tokenizer: str, train_text: str, out: str) -> None:
    source_tok = AutoTokenizer.from_pretrained(base)
    target_tok = AutoTokenizer.from_pretrained(tokenizer)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    rows = FOCUS(
        target_tokenizer=target_tok,
        source_tokenizer=source_tok,
        source_embeddings=model.get_input_embeddings().weight.detach(),
        auxiliary_embedding_mode="fasttext-tokenlevel",
        target_training_data_path=train_text,
        verbosity="silent",
    )
    model.resize_token_embeddings(len(target_tok))
    model.get_input_embeddings().weight.data[:] = rows
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        setattr(model.config, name, getattr(target_tok, name))
    model.save_pretrained(out)
    target_tok.save_pretrained(out)


if __name__ == "__main__":
    main(*sys.argv[1:5])
