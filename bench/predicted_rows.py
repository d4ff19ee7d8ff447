"""Predicted rows in the output softmax: does their scale or offset take probability from the
tokens the base model knows?

A tied row is both what the model reads and a competitor in every next-token softmax. A
target of another family predicts tens of thousands of rows (88,690 of Llama-3's 128,256), and a
mixture of base rows is shorter than the rows it mixes, so its logits sit nearer the middle of
the softmax than a real token's would. This transplants the bundled SmolLM2-135M onto a real
tokenizer once (--method), then changes only the predicted rows, and scores each variant on the
first --eval-bytes of the shared eval files (ratio to the original's bits per byte):

- `as written` (the method's default shift off);
- `norm xF`: each predicted row rescaled to F times the mean norm of the base rows;
- `shift D`: each predicted row moved against the base model's mean final hidden state, lowering
  its logit by D nats in the average context (`--option shift=D`, `hypernet/heuristics/shift.py`).

With --split train the texts are the last --eval-bytes of each *.train.txt (to choose a
default), else the first of each *.eval.txt.

    python bench/predicted_rows.py [--target llama3] [--method hybrid] [--langs en python]

Writes bench/out/predicted_rows.json and prints the table for RESULTS.md.
"""

from __future__ import annotations

import argparse
import shutil

import torch
from common import OUT, corpus_file, ratio_table, run, tokenizer_folder, write_json
from transformers import AutoModelForCausalLM

from hypernet import evaluate as ev
from hypernet.align import align
from hypernet.heuristics.shift import shift
from hypernet.hidden import mean_hidden
from hypernet.sources import load_tokenizer, resolve_model
from hypernet.texts import read_eval_text
from hypernet.vocab import load_vocab


def text_of(lang: str, split: str, n_bytes: int) -> str:
    if split == "eval":
        return read_eval_text(corpus_file(lang, "eval"), n_bytes)
    raw = corpus_file(lang, "train").read_bytes()[-n_bytes:]
    return raw.decode("utf-8", errors="ignore")


def variant(name: str, rows: torch.Tensor, base: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """The predicted rows [n, d] as variant `name` changes them."""
    kind, _, value = name.partition(" ")
    if kind == "norm":
        target = float(value.lstrip("x")) * base.norm(dim=1).mean()
        return rows * (target / rows.norm(dim=1, keepdim=True).clamp_min(1e-6))
    if kind == "shift":
        return shift(rows, mu, float(value))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", default="llama3", help="de-32k, or a real family's npm name")
    p.add_argument("--method", default="hybrid")
    p.add_argument("--hypernet", default="smollm2-135m", help="for the hypernet* methods")
    p.add_argument("--langs", nargs="+", default=["en", "python"])
    p.add_argument("--eval-bytes", type=int, default=16000)
    p.add_argument("--split", choices=("eval", "train"), default="eval")
    p.add_argument(
        "--variants",
        nargs="+",
        default=["as written", "norm x1", "norm x0.8", "shift 1", "shift 2", "shift 4"],
    )
    args = p.parse_args()
    base_dir = resolve_model("smollm2-135m")
    tokenizer = tokenizer_folder(args.target, base_dir)
    texts = {lang: text_of(lang, args.split, args.eval_bytes) for lang in args.langs}
    before = {lang: ev.evaluate_folder(base_dir, t).bits_per_byte for lang, t in texts.items()}
    out = OUT / "checkpoints" / f"predicted-{args.target}"
    shutil.rmtree(out, ignore_errors=True)
    hypernet = ["--hypernet", args.hypernet] if args.method.startswith("hypernet") else []
    run(["transplant", "--model", str(base_dir), "--tokenizer", str(tokenizer),
         "--method", args.method, *hypernet, "--option", "shift=0", "--out", str(out),
         "--quiet"])  # fmt: skip
    base_tok, new_tok = load_tokenizer(base_dir), load_tokenizer(out)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    base_rows = base.get_input_embeddings().weight.detach()
    mu = mean_hidden(base_dir, base_tok)
    predicted = torch.tensor(
        align(load_vocab(base_tok), load_vocab(new_tok), len(base_tok)).predict
    )
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert model.config.tie_word_embeddings, "the bundled base is tied: one matrix to change"
    weight = model.get_input_embeddings().weight
    written = weight.detach().clone()
    print(f"{len(predicted)} predicted rows; mean norm {written[predicted].norm(dim=1).mean():.3f}"
          f" against the base rows' {base_rows.norm(dim=1).mean():.3f}")  # fmt: skip
    results = {}
    for name in args.variants:
        with torch.no_grad():
            weight.copy_(written)
            weight[predicted] = variant(name, written[predicted], base_rows, mu)
        results[name] = {
            lang: ev.evaluate(model, new_tok, t).bits_per_byte / before[lang]
            for lang, t in texts.items()
        }
        print(name, {k: round(v, 4) for k, v in results[name].items()}, flush=True)
    write_json(OUT / "predicted_rows.json", {"args": vars(args), **results})
    print(ratio_table("predicted rows", results, args.langs))
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
