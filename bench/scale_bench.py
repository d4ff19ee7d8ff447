"""Memory at scale: a synthetic Llama-shaped checkpoint of several GB (random weights).

Builds the checkpoint tensor by tensor (never whole in memory), transplants it to another 32k
tokenizer in a fresh process, and compares that process's peak resident memory with the bound
1 GB + 3 x (its embedding matrices). Prints one table; writes bench/out/scale.json.

    python bench/scale_bench.py [--layers 16] [--hidden 2048] [--method subword]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from common import OUT, run, target_tokenizers, write_json
from safetensors.torch import save_file
from transformers import AutoTokenizer, LlamaConfig

from hypernet.sources import resolve_model


def build(folder: Path, tokenizer: Path, layers: int, hidden: int, tied: bool) -> int:
    """Write a random Llama checkpoint, one shard per layer; returns its size in bytes."""
    tok = AutoTokenizer.from_pretrained(tokenizer)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=int(hidden * 2.75),
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=hidden // 256,
        tie_word_embeddings=tied,
        torch_dtype="float32",
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    folder.mkdir(parents=True)
    config.save_pretrained(folder)
    tok.save_pretrained(folder)
    inter, kv = config.intermediate_size, config.num_key_value_heads * 64

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape) * 0.02

    def layer(i: int) -> dict[str, torch.Tensor]:
        p = f"model.layers.{i}."
        return {
            p + "self_attn.q_proj.weight": rand(hidden, hidden),
            p + "self_attn.k_proj.weight": rand(kv, hidden),
            p + "self_attn.v_proj.weight": rand(kv, hidden),
            p + "self_attn.o_proj.weight": rand(hidden, hidden),
            p + "mlp.gate_proj.weight": rand(inter, hidden),
            p + "mlp.up_proj.weight": rand(inter, hidden),
            p + "mlp.down_proj.weight": rand(hidden, inter),
            p + "input_layernorm.weight": torch.ones(hidden),
            p + "post_attention_layernorm.weight": torch.ones(hidden),
        }

    def last() -> dict[str, torch.Tensor]:
        out = {"model.norm.weight": torch.ones(hidden)}
        if not tied:
            out["lm_head.weight"] = rand(len(tok), hidden)
        return out

    makers = [lambda: {"model.embed_tokens.weight": rand(len(tok), hidden)}]
    makers += [lambda i=i: layer(i) for i in range(layers)] + [last]
    weight_map, total = {}, 0
    for k, make in enumerate(makers):  # one shard in memory at a time
        name = f"model-{k + 1:05d}-of-{len(makers):05d}.safetensors"
        shard = make()
        save_file(shard, folder / name, metadata={"format": "pt"})
        for tensor_name, t in shard.items():
            weight_map[tensor_name] = name
            total += t.numel() * t.element_size()
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--method", default="subword")
    p.add_argument("--tied", action="store_true")
    args = p.parse_args()

    tokenizers = target_tokenizers(resolve_model("smollm2-135m"))
    folder = OUT / "scale" / "base"
    out = OUT / "scale" / "out"
    shutil.rmtree(OUT / "scale", ignore_errors=True)
    size = build(folder, tokenizers["de"], args.layers, args.hidden, args.tied)
    r = run(
        [
            "transplant",
            "--model",
            str(folder),
            "--tokenizer",
            str(tokenizers["es"]),
            "--method",
            args.method,
            "--out",
            str(out),
            "--json",
            "--quiet",
        ]
    )
    report = json.loads(r.stdout)
    rows = report["base_tokenizer"]["size"]
    embedding_bytes = rows * args.hidden * 4 * (1 if args.tied else 2)
    bound_mb = 1024 + 3 * embedding_bytes / 2**20
    written = sum(f.stat().st_size for f in out.glob("*.safetensors"))
    result = {
        "checkpoint_gb": size / 2**30,
        "written_gb": written / 2**30,
        "embedding_mb": embedding_bytes / 2**20,
        "peak_mb": r.peak_mb,
        "bound_mb": bound_mb,
        "seconds": r.seconds,
        "timings": report["timings"],
        "method": args.method,
        "tied": args.tied,
    }
    write_json(OUT / "scale.json", result)
    shutil.rmtree(OUT / "scale", ignore_errors=True)
    print("| checkpoint | embeddings | peak RSS | bound (1 GB + 3x emb) | wall | within |")
    print("|---|---|---|---|---|---|")
    print(
        f"| {result['checkpoint_gb']:.2f} GB | {result['embedding_mb']:.0f} MB | "
        f"{r.peak_mb:.0f} MB | {bound_mb:.0f} MB | {r.seconds:.0f} s | "
        f"{'yes' if r.peak_mb <= bound_mb else 'NO'} |"
    )


if __name__ == "__main__":
    main()
