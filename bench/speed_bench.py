"""Wall time of a 32k-vocabulary `hybrid` transplant of SmolLM2-135M, cache by cache.

The global heuristic embeds token strings with all-MiniLM-L6-v2 and caches them, so a
transplant's time depends on what the cache already holds. Three runs in one fresh cache, side
by side: (1) cold: nothing cached; (2) a second tokenizer from the same base model: the base
vocabulary's embeddings are cached, the new vocabulary's are not (the common case); (3) the same
transplant again: everything cached. Timed from process start to checkpoint written (no eval).
Writes bench/out/speed.json.

    python bench/speed_bench.py [--first de] [--second es]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from common import OUT, run, target_tokenizers, write_json

from hypernet.sources import resolve_model

STAGES = ("resolve", "align", "predict", "write")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--first", default="de")
    p.add_argument("--second", default="es")
    args = p.parse_args()

    base = resolve_model("smollm2-135m")  # converted once; the runs below only read it
    tokenizers = target_tokenizers(base)
    cache = Path(tempfile.mkdtemp(prefix="tokengraft-speed-"))
    plan = [
        ("cold cache", args.first),
        ("base cached, new vocabulary not", args.second),
        ("everything cached", args.second),
    ]
    rows = []
    for label, target in plan:
        out = OUT / "speed" / f"{target}-hybrid"
        shutil.rmtree(out, ignore_errors=True)
        r = run(
            [
                "transplant",
                "--model",
                str(base),
                "--tokenizer",
                str(tokenizers[target]),
                "--out",
                str(out),
                "--json",
                "--quiet",
            ],
            env={"TOKENGRAFT_CACHE": str(cache)},
        )
        report = json.loads(r.stdout)
        shutil.rmtree(out, ignore_errors=True)
        rows.append(
            {
                "case": label,
                "target": target,
                "wall_seconds": r.seconds,
                "peak_mb": r.peak_mb,
                "timings": report["timings"],
                "predicted": report["vocab"]["predicted"],
            }
        )
    shutil.rmtree(cache, ignore_errors=True)
    write_json(OUT / "speed.json", rows)
    print("| case | target | predicted tokens | " + " | ".join(STAGES) + " | process wall | peak |")
    print("|---" * (len(STAGES) + 5) + "|")
    for row in rows:
        stages = " | ".join(f"{row['timings'][s]:.1f}" for s in STAGES)
        print(
            f"| {row['case']} | {row['target']} | {row['predicted']} | {stages} | "
            f"{row['wall_seconds']:.1f} s | {row['peak_mb']:.0f} MB |"
        )


if __name__ == "__main__":
    main()
