"""Where a transplanted checkpoint loses its bits: on the text its copied tokens cover, on
the text its predicted tokens cover, and how much probability the predicted rows take away
from the copied targets through the (tied) output softmax.

Scores the eval text on the sliding windows of `tokengraft eval`, with the original model
and tokenizer and with the transplanted ones. Each token's loss is spread over the characters
it ends (the text since the previous token), so both models' losses can be summed over the
same stretches of text: those covered by copied target tokens (the base vocabulary has the
surface form, or a special token of the same role) and those covered by predicted ones. For
copied targets it also scores a softmax restricted to copied tokens: the difference is what
the predicted output rows steal.

`split_by_kind` groups the excess by what each target token is (`KINDS`): a copied token read
as the base reads it, a copied token in a context the base never gave it, and predicted tokens
by their text (punctuation merged with a newline, a whitespace run, a number, another merge
across the base's pre-token cuts, a word the base splits into pieces).

    python bench/loss_split.py --checkpoint smollm2-python --text python.eval.txt
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerBase

from hypernet.align import align
from hypernet.evaluate import windows
from hypernet.sources import load_tokenizer, resolve_model
from hypernet.texts import read_eval_text
from hypernet.vocab import load_vocab


def token_nll(
    model: torch.nn.Module, ids: list[int], copied: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-target NLL (nats) for ids[1:], on the windows `tokengraft eval` uses: under the
    full softmax, and under a softmax over the `copied` ids only."""
    full, restricted = torch.zeros(len(ids) - 1), torch.zeros(len(ids) - 1)
    x = torch.tensor(ids)
    with torch.inference_mode():
        for start, end, first in windows(len(ids), window=1024, stride=512):
            logits = model(input_ids=x[None, start:end]).logits[0].float()
            pred = logits[first - 1 - start : end - 1 - start]
            target = x[first:end]
            full[first - 1 : end - 1] = F.cross_entropy(pred, target, reduction="none")
            masked = pred.masked_fill(~copied, float("-inf"))
            restricted[first - 1 : end - 1] = F.cross_entropy(masked, target, reduction="none")
    return full, restricted


def copied_mask(
    base_dir: Path, base_tok: PreTrainedTokenizerBase, tok: PreTrainedTokenizerBase
) -> torch.Tensor:
    """Which of the new tokenizer's ids have copied rows (same surface, or a special token of
    the same role), as the transplant aligned them."""
    rows = AutoConfig.from_pretrained(base_dir).vocab_size
    alignment = align(load_vocab(base_tok), load_vocab(tok), rows)
    copied = torch.zeros(len(tok), dtype=torch.bool)
    copied[list(alignment.copies) + list(alignment.specials)] = True
    return copied


def char_losses(nll: torch.Tensor, ends: list[int], n_chars: int) -> torch.Tensor:
    """Each token's loss spread evenly over the characters since the previous token's end;
    a token that ends no new character (part of a character) adds to the last one."""
    out, previous = torch.zeros(n_chars), 0
    for loss, end in zip(nll.tolist(), ends, strict=True):
        if end > previous:
            out[previous:end] += loss / (end - previous)
            previous = end
        else:
            out[max(0, previous - 1)] += loss
    return out


def score(
    model_dir: Path | str,
    tok: PreTrainedTokenizerBase,
    text: str,
    copied: torch.Tensor | None = None,
) -> tuple[list[int], list[tuple[int, int]], torch.Tensor, torch.Tensor]:
    """Text token ids, their character spans, and their losses (full and copied-only softmax)."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, spans = enc["input_ids"], [tuple(span) for span in enc["offset_mapping"]]
    rows = model.get_output_embeddings().weight.shape[0]
    mask = torch.ones(rows, dtype=torch.bool)
    if copied is not None:  # rows beyond the tokenizer (padding) are never copied tokens
        mask[: len(copied)], mask[len(copied) :] = copied[:rows], False
    if tok.bos_token_id is not None:
        full, restricted = token_nll(model, [tok.bos_token_id, *ids], mask)
    else:  # the first token has no context and no loss, as in `tokengraft eval`
        full, restricted = (torch.cat([torch.zeros(1), t]) for t in token_nll(model, ids, mask))
    return ids, spans, full, restricted


Spans = list[tuple[int, int]]  # character offsets (start, end) of tokens

KINDS = (
    "copied, as the base reads it",
    "copied, new context",
    "merged punctuation/newline",
    "whitespace run",
    "number",
    "merged, other",
    "predicted word",
)


def predicted_kind(text: str, pre_tokens: int) -> str:
    """What a predicted token is, from its text and how many pieces the base's pre-tokenizer
    cuts it into."""
    if text.strip() == "":
        return "whitespace run"
    if any(c.isdigit() for c in text) and all(c.isdigit() or c.isspace() for c in text):
        return "number"
    if pre_tokens > 1:
        return "merged punctuation/newline" if "\n" in text else "merged, other"
    return "predicted word"


def token_kinds(
    text: str, ids: list[int], spans: list[tuple[int, int]], copied: torch.Tensor,
    base_spans: set[tuple[int, int]], pre_tokenize: Callable[[str], list],
) -> list[str]:  # fmt: skip
    """A kind per target token. A copied token is "as the base reads it" when it and the token
    before it both cover exactly the characters of a base token."""
    kinds, previous_same = [], True
    for token, span in zip(ids, spans, strict=True):
        same = span in base_spans
        if copied[token]:
            kinds.append(KINDS[0] if same and previous_same else KINDS[1])
        else:
            piece = text[span[0] : span[1]]
            kinds.append(predicted_kind(piece, len(pre_tokenize(piece))))
        previous_same = same
    return kinds


def char_kinds(kinds: list[str], ends: list[int], n_chars: int) -> list[str]:
    """Each character labelled with the kind of the token that ends it (as `char_losses`)."""
    out, previous = [KINDS[0]] * n_chars, 0
    for kind, end in zip(kinds, ends, strict=True):
        if end > previous:
            out[previous:end] = [kind] * (end - previous)
            previous = end
    return out


def base_losses(base_dir: Path, text: str) -> tuple[Spans, torch.Tensor]:
    """The base tokenizer's spans on `text` and the base model's per-character losses."""
    _, spans, nll, _ = score(base_dir, load_tokenizer(base_dir), text)
    return spans, char_losses(nll, [end for _, end in spans], len(text))


def split_by_kind(
    base_dir: Path, checkpoint: Path, text: str, base: tuple[Spans, torch.Tensor] | None = None
) -> dict[str, dict[str, float]]:
    """Kind -> share of the text's characters and excess bits per byte over the original.
    `base`: `base_losses(base_dir, text)`, when already computed."""
    base_tok, tok = load_tokenizer(base_dir), load_tokenizer(checkpoint)
    copied = copied_mask(base_dir, base_tok, tok)
    ids, spans, full, _ = score(checkpoint, tok, text, copied)
    pre_tokenize = base_tok.backend_tokenizer.pre_tokenizer.pre_tokenize_str
    base = base or base_losses(base_dir, text)
    return excess_by_kind(text, (ids, spans, full), copied, base, pre_tokenize)


def excess_by_kind(
    text: str,
    new: tuple[list[int], Spans, torch.Tensor],
    copied: torch.Tensor,
    base: tuple[Spans, torch.Tensor],
    pre_tokenize: Callable[[str], list],
) -> dict[str, dict[str, float]]:
    """`split_by_kind` of a checkpoint already scored: its ids, spans and per-token losses,
    which ids are copied, and the base's spans and per-character losses."""
    (ids, spans, full), (base_spans, original) = new, base
    n_chars, per_byte = len(text), math.log(2) * len(text.encode())
    ends = [end for _, end in spans]
    kinds = token_kinds(text, ids, spans, copied, set(base_spans), pre_tokenize)
    labels = char_kinds(kinds, ends, n_chars)
    excess = char_losses(full, ends, n_chars) - original
    out = {}
    for kind in KINDS:
        chars = torch.tensor([label == kind for label in labels])
        out[kind] = {
            "share": chars.float().mean().item(),
            "excess": (excess[chars].sum() / per_byte).item(),
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="a transplanted checkpoint folder")
    p.add_argument("--base", default="smollm2-135m", help="the model it was transplanted from")
    p.add_argument("--text", required=True)
    p.add_argument("--eval-bytes", type=int, default=20000)
    p.add_argument("--top", type=int, default=15, help="list the costliest predicted tokens")
    args = p.parse_args()

    text = read_eval_text(Path(args.text), args.eval_bytes)
    n_chars, per_byte = len(text), math.log(2) * len(text.encode())
    base_dir = resolve_model(args.base)
    base_tok, tok = load_tokenizer(base_dir), load_tokenizer(args.checkpoint)
    _, base_spans, base_nll, _ = score(base_dir, base_tok, text)
    original = char_losses(base_nll, [end for _, end in base_spans], n_chars)

    copied = copied_mask(base_dir, base_tok, tok)
    ids, spans, full, restricted = score(args.checkpoint, tok, text, copied)
    ends = [end for _, end in spans]
    new = char_losses(full, ends, n_chars)
    is_copied = copied[torch.tensor(ids)]
    copied_chars = char_losses(is_copied.float(), ends, n_chars) > 0
    # A copied token where the base tokenizer has one token over the same characters: the
    # model reads what it always read there, unless the context differs.
    base_set = set(base_spans)
    same = torch.tensor([span in base_set for span in spans]) & is_copied
    same_chars = char_losses(same.float(), ends, n_chars) > 0

    everything = torch.ones(n_chars, dtype=torch.bool)
    print(f"{'text covered by':<28} {'share':>6} {'original':>9} {'transplant':>11} {'excess':>7}")
    for name, chars in (
        ("copied tokens", copied_chars),
        ("  cut as the base cuts it", same_chars),
        ("  cut differently", copied_chars & ~same_chars),
        ("predicted tokens", ~copied_chars),
        ("all", everything),
    ):
        before, after = original[chars].sum() / per_byte, new[chars].sum() / per_byte
        share = chars.float().mean().item()
        print(f"{name:<28} {share:6.1%} {before:9.4f} {after:11.4f} {after - before:+7.4f}")
    stolen = (full[is_copied] - restricted[is_copied]).sum() / per_byte
    print(f"taken from copied targets by the predicted output rows: {stolen:.4f} bits/byte")

    costs: dict[int, list[float]] = {}
    for token, nll in zip(ids, full.tolist(), strict=True):
        if not copied[token]:
            costs.setdefault(token, []).append(nll / math.log(2))
    print(f"costliest predicted tokens (of {len(costs)} distinct): total bits, count, mean")
    for token, c in sorted(costs.items(), key=lambda kv: -sum(kv[1]))[: args.top]:
        surface = tok.convert_tokens_to_string([tok.convert_ids_to_tokens(token)])
        print(f"  {surface!r:<28} {sum(c):8.1f} {len(c):5d} {sum(c) / len(c):6.2f}")

    print(f"{'by kind of token':<30} {'share':>6} {'excess':>7}")
    pre_tokenize = base_tok.backend_tokenizer.pre_tokenizer.pre_tokenize_str
    by_kind = excess_by_kind(text, (ids, spans, full), copied, (base_spans, original), pre_tokenize)
    for kind, k in by_kind.items():
        print(f"{kind:<30} {k['share']:6.1%} {k['excess']:+7.4f}")


if __name__ == "__main__":
    main()
