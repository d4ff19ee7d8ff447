"""Rows for tokens the base never read as one: which local estimate serves them best.

A target of another family merges text the base's pre-tokenizer always cuts (".\\n", "):\\n",
a run of spaces, "123" where SmolLM2 reads digits one at a time). `hybrid` gives such a token a
mixture of its base pieces' rows. This transplants the bundled SmolLM2-135M onto a real
tokenizer once with `hybrid`, then replaces the rows of those tokens only, by rule, and scores
each variant on the first --eval-bytes of the shared eval files (bits per byte, ratio to the
original):

- `hybrid`: as the transplant wrote them;
- `mean`: the plain mean of the pieces' rows (FVT);
- `first` / `last`: the first / last piece's row;
- `first-last`: `--first-share` of the first piece's row, the rest on the last's;
- `IN/OUT` (e.g. `last/first`): input and output rows apart (the tied matrix untied in memory),
  the input row by rule IN, the output row by rule OUT.

    python bench/merged_rows.py [--target llama3] [--langs en python] [--eval-bytes 16000]

Writes bench/out/merged_rows.json and prints the table for RESULTS.md.
"""

from __future__ import annotations

import argparse
import shutil
from collections import Counter
from pathlib import Path

import torch
from common import OUT, corpus_file, npm_tokenizer, ratio_table, run, write_json
from loss_split import predicted_kind
from transformers import AutoModelForCausalLM

from hypernet import evaluate as ev
from hypernet.align import align
from hypernet.sources import load_tokenizer, resolve_model
from hypernet.texts import read_eval_text
from hypernet.vocab import Decomposer, load_vocab

RULES = ("hybrid", "mean", "first", "last", "first-last")
UNTIED = ("last/first", "last/hybrid", "hybrid/first", "mean/first", "last/mean")


def merged_tokens(base_dir: Path, tokenizer: Path) -> dict[int, list[int]]:
    """Predicted tokens whose surface the base's pre-tokenizer cuts in two or more: new id ->
    base pieces, in order."""
    base_tok, new_tok = load_tokenizer(base_dir), load_tokenizer(tokenizer)
    base, new = load_vocab(base_tok), load_vocab(new_tok)
    alignment = align(base, new, len(base))
    split = base_tok.backend_tokenizer.pre_tokenizer.pre_tokenize_str
    spell = Decomposer(base_tok, base, len(base)).spell
    out, counts = {}, Counter()
    for i in alignment.predict:
        surface = new.surfaces[i]
        text = surface.decode("utf-8", errors="ignore")  # type: ignore[union-attr]
        cuts = len(split(text)) if text else 0
        if cuts > 1 and (pieces := spell(surface)):  # type: ignore[arg-type]
            out[i] = pieces
            counts[predicted_kind(text, cuts)] += 1
    print(f"{len(out)} merged tokens of {len(alignment.predict)} predicted: {dict(counts)}")
    return out


def rows_by_rule(
    rule: str, pieces: list[int], base: torch.Tensor, share: float, written: torch.Tensor
) -> torch.Tensor:
    """A merged token's row by a rule over its base pieces (`written`: `hybrid`'s row)."""
    if rule == "hybrid":
        return written
    if rule == "mean":
        return base[pieces].mean(0)
    if rule == "first":
        return base[pieces[0]]
    if rule == "last":
        return base[pieces[-1]]
    return share * base[pieces[0]] + (1 - share) * base[pieces[-1]]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", default="llama3")
    p.add_argument("--langs", nargs="+", default=["en", "python"])
    p.add_argument("--eval-bytes", type=int, default=16000)
    p.add_argument("--first-share", type=float, default=0.5)
    p.add_argument("--untied", nargs="*", default=list(UNTIED), help="IN/OUT rules to try")
    args = p.parse_args()
    base_dir, tokenizer = resolve_model("smollm2-135m"), npm_tokenizer(args.target)
    texts = {
        lang: read_eval_text(corpus_file(lang, "eval"), args.eval_bytes) for lang in args.langs
    }
    before = {lang: ev.evaluate_folder(base_dir, t).bits_per_byte for lang, t in texts.items()}
    out = OUT / "checkpoints" / f"merged-{args.target}"
    shutil.rmtree(out, ignore_errors=True)
    run(["transplant", "--model", str(base_dir), "--tokenizer", str(tokenizer),
         "--method", "hybrid", "--out", str(out), "--quiet"])  # fmt: skip
    merged = merged_tokens(base_dir, tokenizer)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    base_rows = base.get_input_embeddings().weight.detach()
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert model.config.tie_word_embeddings, "the bundled base is tied: one matrix to replace"
    weight = model.get_input_embeddings().weight
    written = weight.detach().clone()
    new_tok = load_tokenizer(out)
    results: dict[str, dict[str, float]] = {}
    share = args.first_share
    for rule in (*RULES, *args.untied):
        rule_in, _, rule_out = rule.partition("/")
        head = torch.nn.Parameter(written.clone()) if rule_out else weight
        model.lm_head.weight = head  # the same matrix unless the rule unties them
        with torch.no_grad():
            weight.copy_(written)
            for i, pieces in merged.items():
                weight[i] = rows_by_rule(rule_in, pieces, base_rows, share, written[i])
                if rule_out:
                    head[i] = rows_by_rule(rule_out, pieces, base_rows, share, written[i])
        results[rule] = {
            lang: ev.evaluate(model, new_tok, t).bits_per_byte / before[lang]
            for lang, t in texts.items()
        }
        print(rule, {k: round(v, 4) for k, v in results[rule].items()}, flush=True)
    write_json(OUT / "merged_rows.json", {"args": vars(args), "merged": len(merged), **results})
    print(ratio_table("rule", results, args.langs))
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
