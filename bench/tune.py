"""Choose the heuristics' defaults by measurement, on *train* text only.

Coordinate descent over a method's options (hybrid by default): starting from the current
defaults, each option in turn takes the value from its grid that minimises the mean
bits-per-byte ratio (transplanted / original) over the targets, scored on a slice cut from the
end of each `*.train.txt` (the `*.eval.txt` files are for reporting only). One model load, one
alignment per target; only the prediction changes between trials. Writes bench/out/NAME.json.

    python bench/tune.py [--bytes 8000] [--targets de es python] [--grid weight k ...]
    python bench/tune.py --method hypernet+hybrid --hypernet DIR --grid hypernet_weight
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, replace

import torch
from common import CORPORA, OUT, target_tokenizers, write_json
from transformers import AutoModelForCausalLM

from hypernet.align import Setup
from hypernet.evaluate import evaluate
from hypernet.methods import MethodOptions, get_method
from hypernet.predict import predict
from hypernet.sources import load_tokenizer, resolve_model

GRID = {
    "weight": [0.3, 0.4, 0.5, 0.6, 0.7],
    "threshold": [0.2, 0.3, 0.4, 0.5],
    "temperature": [0.02, 0.05, 0.1, 0.2, 0.3],
    "k": [4, 8, 16, 32],
    "local_temperature": [0.3, 1.0, 3.0],
    "hypernet_weight": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5],
}


def train_slice(lang: str, size: int) -> str:
    data = (CORPORA / f"{lang}.train.txt").read_bytes()[-size:]
    return data.decode(errors="ignore").split("\n", 1)[-1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bytes", type=int, default=8000)
    p.add_argument("--targets", nargs="+", default=["de", "es", "python"])
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--grid", nargs="+", default=list(GRID)[:-1], help="options to sweep")
    p.add_argument("--method", default="hybrid")
    p.add_argument("--hypernet", help="hypernetwork folder for the hypernet* methods")
    p.add_argument("--name", default="tune", help="writes bench/out/NAME.json")
    args = p.parse_args()

    base = resolve_model("smollm2-135m")
    tokenizers = target_tokenizers(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    base_tok = load_tokenizer(base)
    original_embeddings = model.get_input_embeddings().weight.detach().clone()
    texts = {t: train_slice(t, args.bytes) for t in args.targets}

    def restore() -> None:
        model.resize_token_embeddings(original_embeddings.shape[0])
        model.get_input_embeddings().weight.data.copy_(original_embeddings)

    originals = {t: evaluate(model, base_tok, texts[t]).bits_per_byte for t in args.targets}
    setups = {
        t: Setup.load(base, load_tokenizer(tokenizers[t]), hypernet=args.hypernet)
        for t in args.targets
    }
    method = get_method(args.method)
    trials: list[dict] = []

    def score(options: MethodOptions) -> float:
        ratios = {}
        for t, setup in setups.items():
            matrices, _ = predict(setup, method, options)
            model.resize_token_embeddings(matrices["input"].shape[0])
            model.get_input_embeddings().weight.data.copy_(matrices["input"])
            bpb = evaluate(model, setup.new_tok, texts[t]).bits_per_byte
            ratios[t] = bpb / originals[t]
        restore()
        mean = sum(ratios.values()) / len(ratios)
        trials.append({"options": asdict(options), "ratios": ratios, "mean": mean})
        print(f"{mean:.4f} {ratios} {asdict(options)}", flush=True)
        return mean

    best = MethodOptions()
    best_score = score(best)
    for _ in range(args.rounds):
        for name in args.grid:
            for value in GRID[name]:
                if getattr(best, name) == value:
                    continue
                candidate = replace(best, **{name: value})
                s = score(candidate)
                if s < best_score:
                    best, best_score = candidate, s
    write_json(
        OUT / f"{args.name}.json",
        {
            "method": args.method,
            "hypernet": args.hypernet,
            "bytes": args.bytes,
            "originals": originals,
            "best": asdict(best),
            "best_score": best_score,
            "trials": trials,
        },
    )
    print(f"best mean ratio {best_score:.4f} with {asdict(best)}")


if __name__ == "__main__":
    main()
