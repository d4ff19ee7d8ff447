"""Refine after a zero-shot transplant: bits per byte before, during and after, on held-out text.

For each language and start method: the 32k BPE target trained on *.train.txt, zero-shot rows
from the start method, then `refine` on the whole *.train.txt for --minutes (2 CPU cores here),
evaluated on the first --eval-bytes of *.eval.txt (never refined on, never tuned on). The rows
are also evaluated as they stood at each --snapshots minute of the run (the curve), and the
teacher is scored again after the run (the control: its body must not have moved).

    python bench/refine_bench.py --langs de es python en --starts hybrid \
        [--hypernet DIR --starts hypernet+hybrid] [--rows all] [--minutes 10 --snapshots 2 5]
"""

from __future__ import annotations

import argparse
import hashlib
import time

import torch
from common import CORPORA, OUT, target_tokenizers, write_json

from hypernet import evaluate as ev
from hypernet.align import Setup
from hypernet.methods import MethodOptions, get_method
from hypernet.predict import predict
from hypernet.refine import (
    RefineConfig,
    Refiner,
    Tick,
    load_frozen,
    trainable_rows,
    with_rows,
)
from hypernet.sources import load_tokenizer, resolve_model
from hypernet.texts import read_eval_text, read_texts


def body_digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def run_one(args: argparse.Namespace, lang: str, start_method: str, model, base_tok) -> dict:
    tokenizers = target_tokenizers(resolve_model("smollm2-135m"))
    new_tok = load_tokenizer(tokenizers[lang])
    text = read_eval_text(CORPORA / f"{lang}.eval.txt", args.eval_bytes)
    setup = Setup.load(resolve_model("smollm2-135m"), new_tok, hypernet=args.hypernet)
    start, _ = predict(setup, get_method(start_method), MethodOptions())
    digest = body_digest(model)
    teacher = ev.evaluate(model, base_tok, text).bits_per_byte
    zero = ev.evaluate(with_rows(model, start), new_tok, text).bits_per_byte
    config = RefineConfig(minutes=args.minutes, rows=args.rows)
    mask = trainable_rows(setup.alignment, start["input"].shape[0], config.rows)
    texts = read_texts([CORPORA / f"{lang}.train.txt"])
    refiner = Refiner(model, setup.base_tok, new_tok, start, mask, texts, config)
    pending, snapshots = sorted(args.snapshots), {}

    def on_tick(t: Tick) -> None:
        while pending and t.elapsed >= pending[0] * 60:
            snapshots[pending.pop(0)] = (refiner.matrices(), t.step)

    t0 = time.perf_counter()
    result = refiner.fit(progress=on_tick)
    seconds = time.perf_counter() - t0
    curve = [{"minutes": 0, "step": 0, "bpb": zero}]
    for minute, (rows, step) in sorted(snapshots.items()):
        bpb = ev.evaluate(with_rows(model, rows), new_tok, text).bits_per_byte
        curve.append({"minutes": minute, "step": step, "bpb": bpb})
    after = ev.evaluate(with_rows(model, refiner.matrices()), new_tok, text).bits_per_byte
    curve.append({"minutes": result.minutes, "step": result.steps, "bpb": after})
    teacher_after = ev.evaluate(model, base_tok, text).bits_per_byte
    for point in curve:
        point["ratio"] = point["bpb"] / teacher
    return {
        "lang": lang,
        "start": start_method,
        "rows": args.rows,
        "teacher": teacher,
        "teacher_after": teacher_after,
        "body_unchanged": body_digest(model) == digest,
        "zero_shot": zero,
        "refined": after,
        "ratio_zero_shot": zero / teacher,
        "ratio_refined": after / teacher,
        "curve": curve,
        "refine": result.to_dict(),
        "seconds": seconds,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--langs", nargs="+", default=["de", "es", "python", "en"])
    p.add_argument("--starts", nargs="+", default=["hybrid"])
    p.add_argument("--hypernet", help="hypernetwork folder for the hypernet* starts")
    p.add_argument("--rows", default="new", choices=["new", "all"])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--snapshots", type=float, nargs="*", default=[2.0, 5.0])
    p.add_argument("--eval-bytes", type=int, default=20000)
    p.add_argument("--name", default="refine")
    args = p.parse_args()

    base = resolve_model("smollm2-135m")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, base_tok = load_frozen(base, device), load_tokenizer(base)
    results = []
    for start in args.starts:
        for lang in args.langs:
            r = run_one(args, lang, start, model, base_tok)
            results.append(r)
            write_json(OUT / f"{args.name}.json", {"args": vars(args), "results": results})
            points = ", ".join(f"{c['minutes']:g} min x{c['ratio']:.3f}" for c in r["curve"])
            print(
                f"{lang:<7} {start:<16} rows {args.rows}: x{r['ratio_zero_shot']:.3f} -> "
                f"x{r['ratio_refined']:.3f} ({r['refine']['steps']} steps; {points}); teacher "
                f"{r['teacher']:.4f} -> {r['teacher_after']:.4f}, body unchanged "
                f"{r['body_unchanged']}",
                flush=True,
            )
    plot(results, args.name)


def plot(results: list[dict], name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results:
        xs = [c["minutes"] for c in r["curve"]]
        ys = [c["ratio"] for c in r["curve"]]
        ax.plot(xs, ys, marker="o", label=f"{r['lang']} {r['start']} ({r['rows']} rows)")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("refine minutes (2 CPU cores)")
    ax.set_ylabel("bits per byte / original model's")
    ax.set_title("SmolLM2-135M: refine after a zero-shot transplant (held-out eval text)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(OUT / f"{name}.png", dpi=120)


if __name__ == "__main__":
    main()
