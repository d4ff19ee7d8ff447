"""Bits per byte of a causal LM on a text.

Perplexity depends on how many tokens the text is cut into, so it cannot compare a model before
and after a tokenizer change; the text's total information per UTF-8 byte can. Long texts are
scored with overlapping windows so every token has context, yet each token counts exactly once.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from .errors import InputError
from .files import atomic_write
from .sources import cache_root, load_tokenizer

if TYPE_CHECKING:
    from .align import Alignment, Setup


@dataclass
class EvalResult:
    bits_per_byte: float
    tokens_per_byte: float
    bytes: int
    tokens: int  # tokens of the text itself; a prepended BOS is not counted

    def to_dict(self) -> dict:
        return asdict(self)


def windows(n: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """(start, end, first target) per window over `n` ids, targets being positions 1..n-1.

    The first window scores every target in it; each later one scores the next `stride`
    targets with the `window - stride` ids before them as context. The last window is moved
    back to full length rather than shortened, so its tokens get as much context as any, and
    every window has the same length (min(window, n)).
    """
    end = min(window, n)
    spans = [(0, end, 1)]
    while end < n:
        first, end = end, min(end + stride, n)
        spans.append((max(0, end - window), end, first))
    return spans


def evaluate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    *,
    window: int = 1024,
    stride: int = 512,
    batch_size: int = 1,
    progress: Callable[[float], None] | None = None,
) -> EvalResult:
    """Score `text` with sliding windows of `window` tokens advancing by `stride`.

    The BOS token, when the tokenizer has one, is prepended so the first text token is scored
    too; without one the first token has no context and is left out of the loss (its bytes
    still count).
    """
    if not text:
        raise InputError("evaluation text is empty")
    if window < 2 or not 1 <= stride < window:
        raise InputError(f"need window >= 2 and 1 <= stride < window, got {window}/{stride}")
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and window > limit:  # a shorter model: its own length, same overlap
        window, stride = limit, max(1, min(stride, limit // 2))
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    n_tokens = len(ids)
    if n_tokens == 0:
        raise InputError("evaluation text has no tokens")
    if tokenizer.bos_token_id is not None:
        ids = [tokenizer.bos_token_id, *ids]
    n_bytes = len(text.encode("utf-8"))
    spans = windows(len(ids), window, stride)
    all_ids = torch.tensor(ids, dtype=torch.long)
    n_targets = len(ids) - 1
    scored, nll = 0, 0.0
    # Most causal LMs can skip the output layer on positions that are only context: with a
    # large vocabulary that saves a good share of the time and most of the logits' memory.
    trims = "logits_to_keep" in inspect.signature(model.forward).parameters
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for i in range(0, len(spans), batch_size):
                batch = spans[i : i + batch_size]  # all the same length: no padding needed
                inputs = torch.stack([all_ids[s:e] for s, e, _ in batch]).to(model.device)
                keep = max(end - first for _, end, first in batch) + 1
                extra = {"logits_to_keep": keep} if trims else {}
                logits = model(input_ids=inputs, **extra).logits
                offset = inputs.shape[1] - logits.shape[1]  # positions whose logits were skipped
                for row, (start, end, first) in enumerate(batch):
                    pred = logits[
                        row, first - 1 - start - offset : end - 1 - start - offset
                    ].float()
                    target = inputs[row, first - start : end - start]
                    nll += F.cross_entropy(pred, target, reduction="sum").item()
                    scored += end - first
                if progress is not None:
                    progress(scored / max(1, n_targets))
    finally:
        model.train(was_training)
    return EvalResult(
        bits_per_byte=nll / math.log(2) / n_bytes,
        tokens_per_byte=n_tokens / n_bytes,
        bytes=n_bytes,
        tokens=n_tokens,
    )


def evaluate_folder(
    model_dir: Path,
    text: str,
    *,
    window: int = 1024,
    stride: int = 512,
    batch_size: int = 1,
    progress: Callable[[float], None] | None = None,
) -> EvalResult:
    """`evaluate` on a saved model folder, in float32, never running code from the folder."""
    tokenizer = load_tokenizer(model_dir)
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, trust_remote_code=False, use_safetensors=True
    ).to("cuda" if torch.cuda.is_available() else "cpu")
    if progress is not None:
        progress(0.0)  # loading took a while: a caller's progress may stop it here (Cancelled)
    return evaluate(
        model,
        tokenizer,
        text,
        window=window,
        stride=stride,
        batch_size=batch_size,
        progress=progress,
    )


def baseline(model_dir: Path, text: str, progress: Callable[[float], None]) -> dict:
    """The base model's own score on `text`; cached, since every transplant compares with it."""
    key = hashlib.sha256()
    for name in ("config.json", "tokenizer.json"):
        file = model_dir / name
        key.update(file.read_bytes() if file.is_file() else b"")
    for file in sorted(model_dir.glob("*.safetensors")):
        key.update(f"{file.name}:{file.stat().st_size}:{file.stat().st_mtime_ns}".encode())
    key.update(text.encode())
    cache = cache_root() / "evals" / f"{key.hexdigest()[:32]}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    result = evaluate_folder(model_dir, text, progress=progress).to_dict()
    with atomic_write(cache) as tmp:
        tmp.write_text(json.dumps(result))
    return result


def shares(tok: PreTrainedTokenizerBase, text: str, alignment: Alignment) -> dict:
    """Of the eval text's tokens under the new tokenizer: how many have copied vs predicted rows."""
    ids = tok(text, add_special_tokens=False)["input_ids"]
    copied = set(alignment.copies) | set(alignment.specials)
    n_copied = sum(1 for i in ids if i in copied)
    return {
        "tokens": len(ids),
        "copied_share": round(n_copied / max(1, len(ids)), 4),
        "predicted_share": round(1 - n_copied / max(1, len(ids)), 4),
    }


def compare(setup: Setup, folder: Path, progress: Callable[[float], None]) -> dict:
    """The written checkpoint's score on the eval text next to the base model's own."""
    text = setup.inputs.eval_text
    assert text is not None, "compare needs an eval text"
    before = baseline(setup.inputs.model_dir, text, lambda f: progress(f / 2))
    after = evaluate_folder(folder, text, progress=lambda f: progress(0.5 + f / 2))
    return {
        "bytes": after.bytes,
        "before": before,
        "after": after.to_dict(),
        "ratio": round(after.bits_per_byte / before["bits_per_byte"], 4),
        **shares(setup.new_tok, text, setup.alignment),
    }


def zero_shot(
    model: PreTrainedModel, setup: Setup, final: dict, progress: Callable[[float], None]
) -> dict:
    """Bits per byte of `model` carrying the zero-shot rows (before refining), next to the
    refined checkpoint's `final` scores."""
    assert setup.inputs.eval_text is not None, "zero_shot needs an eval text"
    before = evaluate(model, setup.new_tok, setup.inputs.eval_text, progress=progress)
    base = final["before"]["bits_per_byte"]
    after = final["after"]["bits_per_byte"]
    return {
        "before": before.bits_per_byte,
        "after": after,
        "ratio_before": round(before.bits_per_byte / base, 4),
        "ratio_after": round(after / base, 4),
    }
