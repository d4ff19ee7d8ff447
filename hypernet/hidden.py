"""The base model's mean final hidden state: the vector that meets its LM head on average.

Measured on text the model writes itself from its start token (sampled with a fixed seed), so
it needs no text from the user and is the same whatever language the target serves.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase

SAMPLE_TOKENS = 256  # a few windows' worth: one forward pass, seconds on a CPU for small models


@torch.no_grad()
def mean_hidden(model_dir: Path, tok: PreTrainedTokenizerBase, seed: int = 0) -> Tensor:
    """[d]: the mean over SAMPLE_TOKENS positions of the LM head's input."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    start = next(t for t in (tok.bos_token_id, tok.eos_token_id, 0) if t is not None)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        ids = model.generate(
            torch.tensor([[start]]),
            do_sample=True,
            top_k=0,
            max_new_tokens=SAMPLE_TOKENS,
            min_new_tokens=SAMPLE_TOKENS,
            pad_token_id=start,
        )
    seen: list[Tensor] = []
    hook = model.get_output_embeddings().register_forward_hook(
        lambda module, args, out: seen.append(args[0])
    )
    try:
        model(input_ids=ids)
    finally:
        hook.remove()
    return seen[0][0].float().mean(0)
