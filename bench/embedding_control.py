"""Control for the hypernetwork's gains: the same LM-loss budget spent tuning the original
model's own embeddings on the same text, evaluated with the original tokenizer.

Whatever this control gains over the original model is domain adaptation to the training text,
not tokenizer transfer; a hypernetwork's bits per byte should be read next to it.

The budget is counted in steps of the same batch shape as the hypernetwork trainer's, so that
a contended machine does not shrink it: pass the `steps_done` of the run to compare with.

    python bench/embedding_control.py --corpus de en python --steps 406 [--eval-bytes 20000]
"""

from __future__ import annotations

import argparse
import random
import time

import torch
import torch.nn.functional as F
from common import CORPORA, LANGS, OUT, write_json
from transformers import AutoModelForCausalLM

from hypernet.evaluate import evaluate
from hypernet.sources import load_tokenizer, resolve_model
from hypernet.texts import read_eval_text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", nargs="+", default=["de", "en", "python"])
    p.add_argument("--steps", type=int, required=True, help="LM steps (the hypernet run's)")
    p.add_argument("--lr", type=float, default=5e-4)  # the hypernetwork's
    p.add_argument("--batch", type=int, default=2)  # the hypernetwork trainer's defaults
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--eval-bytes", type=int, default=20000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    folder = resolve_model("smollm2-135m")
    tok = load_tokenizer(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    texts = [(CORPORA / f"{c}.train.txt").read_text() for c in args.corpus]
    evals = {lang: read_eval_text(CORPORA / f"{lang}.eval.txt", args.eval_bytes) for lang in LANGS}

    def score() -> dict[str, float]:
        model.eval()
        with torch.no_grad():
            return {lang: evaluate(model, tok, t).bits_per_byte for lang, t in evals.items()}

    before = score()
    print("original", before, flush=True)
    model.requires_grad_(False)
    embeddings = model.get_input_embeddings().weight  # tied: the LM head moves with it
    embeddings.requires_grad_(True)
    optimizer = torch.optim.AdamW([embeddings], lr=args.lr, weight_decay=0.0)
    rng = random.Random(args.seed)
    start, steps, tokens = time.perf_counter(), 0, 0
    model.train()
    while steps < args.steps:
        batch = []
        while len(batch) < args.batch:
            text = texts[rng.randrange(len(texts))]
            at = rng.randrange(len(text) - 8 * args.seq_len)
            ids = tok(text[at : at + 8 * args.seq_len], add_special_tokens=False)["input_ids"][1:]
            if len(ids) > args.seq_len:
                batch.append([tok.bos_token_id, *ids[: args.seq_len]])
        ids = torch.tensor(batch)
        logits = model(input_ids=ids[:, :-1]).logits
        loss = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        steps, tokens = steps + 1, tokens + ids.numel()
        if steps % 20 == 0:
            rate = tokens / (time.perf_counter() - start)
            print(f"step {steps} loss {loss.item():.3f} {rate:.0f} tok/s", flush=True)
    after = score()
    rows = {lang: {"original": before[lang], "tuned": after[lang]} for lang in LANGS}
    write_json(
        OUT / "embedding_control.json",
        {
            "corpus": args.corpus,
            "steps": steps,
            "tokens": tokens,
            "minutes": round((time.perf_counter() - start) / 60, 2),
            "results": rows,
        },
    )
    print(f"\n{steps} steps, {tokens} tokens on {args.corpus}")
    print("| corpus | original bpb | embeddings tuned | ratio |\n|---|---|---|---|")
    for lang, r in rows.items():
        ratio = r["tuned"] / r["original"]
        print(f"| {lang} | {r['original']:.4f} | {r['tuned']:.4f} | {ratio:.3f} |")


if __name__ == "__main__":
    main()
