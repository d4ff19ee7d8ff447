"""Every method on every target tokenizer, on the bundled SmolLM2-135M.

For each target (32k BPE trained on de/es/python/en train text, and MiniLM's WordPiece) and each
method, a fresh `tokengraft transplant` process: bits per byte on the first --eval-bytes of the
matching *.eval.txt next to the original model's, tokens per byte, transplant time (resolve to
checkpoint written, evaluation excluded) and the process's peak memory. Prints one table, writes
bench/out/transplant.json and bench/out/transplant.png.

    python bench/transplant_bench.py [--eval-bytes 20000] [--methods hybrid subword ...]
        [--hypernet DIR --methods hypernet hypernet+hybrid hybrid --name hypernet]
        [--targets de fr ...]  (fr: $TOKENGRAFT_EXTRA_CORPORA/fr.{train,eval}.txt)

A method may carry options, `METHOD,KEY=VALUE,...` (e.g. `hypernet,hypernet_copied=false`):
it runs as METHOD with `--option KEY=VALUE` and is labelled as written.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from common import LANGS, OUT, eval_file, run, target_tokenizers, write_json

from hypernet.sources import resolve_model

# hybrid first: on a target not seen before, its time includes embedding the new vocabulary.
METHODS = ["hybrid", "knn", "subword-weighted", "subword", "gaussian", "mean"]
TRANSPLANT_STAGES = ("resolve", "align", "predict", "write")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--eval-bytes", type=int, default=20000)
    p.add_argument("--methods", nargs="+", default=METHODS)
    p.add_argument(
        "--targets", nargs="+", help="de es python en minilm, or LANG in $TOKENGRAFT_EXTRA_CORPORA"
    )
    p.add_argument("--hypernet", help="hypernetwork folder for the hypernet* methods")
    p.add_argument("--name", default="transplant", help="bench/out/NAME.json and NAME.png")
    args = p.parse_args()
    if args.hypernet and Path(args.hypernet).exists():  # the CLI runs from the repository root
        args.hypernet = str(Path(args.hypernet).resolve())

    base = resolve_model("smollm2-135m")
    names = args.targets or [*LANGS, "minilm"]
    targets = target_tokenizers(base, langs=tuple(n for n in names if n != "minilm"))
    results: list[dict] = []
    for target in names:
        text = eval_file(target)
        original = run(
            [
                "eval",
                "--model",
                str(base),
                "--text",
                str(text),
                "--max-bytes",
                str(args.eval_bytes),
                "--json",
                "--quiet",
            ]
        )
        orig = json.loads(original.stdout)
        results.append({"target": target, "method": "original", **orig})
        print(f"{target:<7} original  bpb {orig['bits_per_byte']:.4f}", flush=True)
        # MiniLM itself speaks its WordPiece vocabulary: a real donor for OMP.
        donor = ["--donor", str(targets[target])] if target == "minilm" else None
        for method in args.methods + (["omp"] if donor else []):
            name, *options = method.split(",")
            out = OUT / "checkpoints" / f"{target}-{name}"
            shutil.rmtree(out, ignore_errors=True)
            r = run(
                [
                    "transplant",
                    "--model",
                    str(base),
                    "--tokenizer",
                    str(targets[target]),
                    "--method",
                    name,
                    "--out",
                    str(out),
                    "--eval-text",
                    str(text),
                    "--eval-bytes",
                    str(args.eval_bytes),
                    "--json",
                    "--quiet",
                    *(donor if method == "omp" and donor else []),
                    *(["--hypernet", args.hypernet] if name.startswith("hypernet") else []),
                    *(f"--option={o}" for o in options),
                ]
            )
            report = json.loads(r.stdout)
            shutil.rmtree(out, ignore_errors=True)
            e = report["eval"]
            row = {
                "target": target,
                "method": method,
                "bits_per_byte": e["after"]["bits_per_byte"],
                "tokens_per_byte": e["after"]["tokens_per_byte"],
                "ratio": e["after"]["bits_per_byte"] / orig["bits_per_byte"],
                "transplant_seconds": sum(report["timings"][s] for s in TRANSPLANT_STAGES),
                "peak_mb": r.peak_mb,
                "overlap": report["vocab"]["overlap"],
                "copied_share": e["copied_share"],
            }
            results.append(row)
            print(
                f"{target:<7} {method:<17} bpb {row['bits_per_byte']:.4f} (x{row['ratio']:.3f}) "
                f"{row['transplant_seconds']:.1f}s {row['peak_mb']:.0f}MB",
                flush=True,
            )
    summary = {"eval_bytes": args.eval_bytes, "hypernet": args.hypernet, "results": results}
    write_json(OUT / f"{args.name}.json", summary)
    methods = args.methods + (["omp"] if "minilm" in names else [])
    print_table(results, names, methods)
    plot(results, names, methods, args.name)


def print_table(results: list[dict], targets: list[str], methods: list[str]) -> None:
    by = {(r["target"], r["method"]): r for r in results}
    print("\nbits per byte (x original) | tokens per byte")
    print("| method | " + " | ".join(f"{t} bpb | {t} tok/B" for t in targets) + " |")
    print("|---" * (2 * len(targets) + 1) + "|")
    for method in ["original", *methods]:
        cells = []
        for t in targets:
            r = by.get((t, method))
            if r is None:
                cells.append(" | ")
            elif method == "original":
                cells.append(f"{r['bits_per_byte']:.3f} | {r['tokens_per_byte']:.3f}")
            else:
                cells.append(
                    f"{r['bits_per_byte']:.3f} (x{r['ratio']:.3f}) | {r['tokens_per_byte']:.3f}"
                )
        print(f"| {method} | " + " | ".join(cells) + " |")
    print("\ntransplant seconds (eval excluded) / peak MB of the process")
    for method in methods:
        cells = [
            f"{by[(t, method)]['transplant_seconds']:.1f}s/{by[(t, method)]['peak_mb']:.0f}MB"
            for t in targets
            if (t, method) in by
        ]
        print(f"| {method} | " + " | ".join(cells) + " |")


def plot(results: list[dict], targets: list[str], methods: list[str], name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = {(r["target"], r["method"]): r for r in results}
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(methods)
    for k, method in enumerate(methods):
        ratios = [by[(t, method)]["ratio"] if (t, method) in by else 0 for t in targets]
        ax.bar([i + k * width for i in range(len(targets))], ratios, width, label=method)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([i + width * (len(methods) - 1) / 2 for i in range(len(targets))], targets)
    ax.set_ylabel("bits per byte / original model's")
    ax.set_title("SmolLM2-135M, zero-shot tokenizer transplant")
    ax.legend(fontsize=8, ncol=3)
    fig.tight_layout()
    fig.savefig(OUT / f"{name}.png", dpi=120)


if __name__ == "__main__":
    main()
