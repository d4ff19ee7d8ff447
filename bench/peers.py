"""Side by side with the tools users would pick instead, in one run: `python bench/peers.py`.

Each peer is installed by this script from PyPI into its own virtual environment under
bench/out/peers/ (never a project dependency), with torch pinned to this project's build so
nothing pulls a CUDA wheel:

- mergekit-tokensurgeon (mergekit 0.1.5). With a donor model (the cross-family case): OMP, its
  default. Without one (the 32k targets): its donor-free approximations `subword` and
  `john_hewitt`, given a placeholder donor (the target tokenizer with zero rows), since the
  command always reads a donor's vocabulary; those two never read the donor's rows.
- FOCUS (deepfocus 1.0.1), its fastText auxiliary embeddings trained on the same *.train.txt
  the target tokenizer was trained on (`bench/peer_focus.py`).

Tried and left out: WECHSEL (downloads pretrained fastText vectors and bilingual dictionaries:
not offline), trans-tokenizers (needs a parallel corpus), `tokenkit` on PyPI (a fertility
metric, not a transfer tool); ZeTT, tokenkit's transfer code and TokenAdapt are not on PyPI.

For every case and tool: wall time and peak RSS of the transplant process alone (cold and warm
where a tool caches: tokengraft's token embeddings, FOCUS's fastText model), bits per byte with
`tokengraft eval` on the same eval bytes, and whether the output loads in transformers as is.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from common import (
    OUT,
    REPO,
    Run,
    corpus_file,
    empty_embedding_cache,
    run,
    run_command,
    target_tokenizers,
    write_json,
)

PEERS = OUT / "peers"
LOG = OUT / "peers.jsonl"  # every result as it comes: the table is built from the last of each
TORCH = "torch==2.13.0"
# deepfocus asks for `fasttext`, an sdist that needs a compiler; fasttext-numpy2-wheel ships the
# same module prebuilt, so deepfocus goes in without its declared dependencies.
FOCUS_DEPS = [
    "transformers>=5,<6", "datasets", "entmax", "fasttext-numpy2-wheel", "fastdist", "numba",
    "scipy", "tqdm", "requests", "print-on-steroids", "numpy",
]  # fmt: skip
CASES = ("de", "es", "python", "en", "minilm")


@dataclass
class Case:
    name: str
    tokenizer: Path
    eval_text: Path
    train_text: Path | None  # FOCUS trains its fastText model on it
    donor: Path | None  # a model that already speaks the target tokenizer


@dataclass
class Result:
    case: str
    tool: str
    seconds: float  # warm where the tool caches, else the one run
    peak_mb: float
    cold_seconds: float | None = None
    bits_per_byte: float | None = None
    ratio: float | None = None
    loads: str = ""
    notes: dict = field(default_factory=dict)


# --- the peers' environments ------------------------------------------------------------------
def environment(name: str, install: Callable[[Path], None]) -> Path:
    """bench/out/peers/NAME: a virtual environment, made once."""
    folder = PEERS / name
    if not (folder / ".done").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        run_command([sys.executable, "-m", "venv", str(folder)])
        pip(folder, TORCH)
        install(folder)
        (folder / ".done").write_text("")
    return folder


def pip(env: Path, *args: str) -> None:
    constraint = PEERS / "constraints.txt"
    constraint.write_text(TORCH + "\n")
    run_command([str(env / "bin" / "pip"), "install", "-q", "-c", str(constraint), *args])


def tokensurgeon_env() -> Path:
    return environment("tokensurgeon", lambda env: pip(env, "mergekit==0.1.5"))


def focus_env() -> Path:
    def install(env: Path) -> None:
        pip(env, "--no-deps", "deepfocus==1.0.1")
        pip(env, *FOCUS_DEPS)

    return environment("focus", install)


# --- the tools ----------------------------------------------------------------------------------
def tokengraft(base: Path, case: Case, method: str | None, out: Path) -> Run:
    args = ["transplant", "--model", str(base), "--tokenizer", str(case.tokenizer)]
    args += ["--out", str(out), "--json", "--quiet"]
    if method is not None:
        args += ["--method", method]
    if case.donor is not None and method == "omp":
        args += ["--donor", str(case.donor)]
    return run(args)


def tokensurgeon(base: Path, case: Case, method: str, out: Path) -> Run:
    donor = placeholder_donor(base, case) if case.donor is None else causal_donor(base, case)
    tool = tokensurgeon_env() / "bin" / "mergekit-tokensurgeon"
    argv = [str(tool), str(base), str(donor), str(out), "-a", method, "--device", "cpu"]
    return run_command(argv)


def placeholder_donor(base: Path, case: Case) -> Path:
    """The target tokenizer with the base model's config and zero input rows: what
    tokensurgeon's donor-free approximations read of a donor (its vocabulary)."""
    folder = PEERS / "donors" / case.name
    if (folder / "model.safetensors").is_file():
        return folder
    import torch
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(case.tokenizer)
    config = json.loads((base / "config.json").read_text())
    config["vocab_size"] = len(tok)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    rows = torch.zeros(len(tok), config["hidden_size"])
    save_file({"model.embed_tokens.weight": rows}, str(folder / "model.safetensors"))
    tok.save_pretrained(folder)
    return folder


def causal_donor(base: Path, case: Case) -> Path:
    """The donor's tokenizer and input rows under a causal LM's config. tokensurgeon 0.1.5
    cannot read an encoder as the donor (a BertModel has no LM-head entry, and `get_stuff`
    fails on it); its OMP reads only the donor's vocabulary and input rows, which this keeps."""
    assert case.donor is not None
    folder = PEERS / "donors" / f"{case.name}-causal"
    if (folder / "model.safetensors").is_file():
        return folder
    from safetensors import safe_open
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    with safe_open(str(case.donor / "model.safetensors"), "pt") as f:
        rows = f.get_tensor("embeddings.word_embeddings.weight")
    config = json.loads((base / "config.json").read_text())
    config.update(vocab_size=rows.shape[0], hidden_size=rows.shape[1], head_dim=rows.shape[1])
    config.update(num_attention_heads=1, num_key_value_heads=1)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    save_file({"model.embed_tokens.weight": rows.contiguous()}, str(folder / "model.safetensors"))
    AutoTokenizer.from_pretrained(case.donor).save_pretrained(folder)
    return folder


def focus(base: Path, case: Case, out: Path) -> Run:
    assert case.train_text is not None
    python = focus_env() / "bin" / "python"
    argv = [str(python), str(REPO / "bench" / "peer_focus.py"), str(base), str(case.tokenizer)]
    env = {"XDG_CACHE_HOME": str(PEERS / "focus-cache"), "TOKENIZERS_PARALLELISM": "false"}
    return run_command([*argv, str(case.train_text), str(out)], env)


# --- measuring ----------------------------------------------------------------------------------
def loads(folder: Path) -> str:
    """'yes' when transformers loads model and tokenizer as is and they agree; else why not."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder)
    except Exception as e:  # any failure is the answer
        return f"no: {str(e).splitlines()[0][:80]}"
    rows = model.get_input_embeddings().weight.shape[0]
    return "yes" if rows >= len(tok) else f"no: {rows} rows for {len(tok)} tokens"


def bits_per_byte(folder: Path, case: Case, eval_bytes: int) -> float:
    args = ["eval", "--model", str(folder), "--text", str(case.eval_text)]
    result = run([*args, "--max-bytes", str(eval_bytes), "--json", "--quiet"])
    return json.loads(result.stdout)["bits_per_byte"]


def scored(result: Result, folder: Path, case: Case, eval_bytes: int, base_bpb: float) -> Result:
    if not result.loads:
        result.loads = loads(folder)
    if result.loads == "yes":
        result.bits_per_byte = bits_per_byte(folder, case, eval_bytes)
        result.ratio = result.bits_per_byte / base_bpb
    shutil.rmtree(folder, ignore_errors=True)
    line = json.dumps(asdict(result))
    print(line, flush=True)
    with LOG.open("a") as log:
        log.write(line + "\n")
    return result


def output(case: Case, tool: str) -> Path:
    return PEERS / "out" / f"{case.name}-{tool}"


def cold_then_warm(transplant: Callable[[], Run], out: Path) -> tuple[Run, Run]:
    """The same transplant twice into `out`: the first fills the tool's cache."""
    cold = transplant()
    shutil.rmtree(out)
    return cold, transplant()


# --- one case -----------------------------------------------------------------------------------
class Bench:
    def __init__(self, base: Path, eval_bytes: int, tools: list[str]) -> None:
        self.base, self.eval_bytes, self.tools = base, eval_bytes, tools

    def case(self, case: Case) -> list[Result]:
        base_bpb = bits_per_byte(self.base, case, self.eval_bytes)
        print(f"{case.name}: the original model {base_bpb:.4f} bits per byte", flush=True)
        results = []
        for tool in self.tools:
            try:
                result = self.tool(tool, case)
            except RuntimeError as e:  # a peer that fails on a case is a result too
                result = Result(case.name, tool, 0.0, 0.0, loads=f"failed: {e}"[:200])
            if result is not None:
                results.append(scored(result, output(case, tool), case, self.eval_bytes, base_bpb))
        return results

    def tool(self, tool: str, case: Case) -> Result | None:
        """Run one tool on one case into PEERS/out/CASE-TOOL; None where it does not apply."""
        out = output(case, tool)
        shutil.rmtree(out, ignore_errors=True)
        name, _, method = tool.partition(":")
        if name == "tokengraft":
            return self.tokengraft(case, None if method == "default" else method, out)
        if name == "tokensurgeon":
            donor_free = method in ("subword", "john_hewitt")
            if donor_free != (case.donor is None):
                return None
            r = tokensurgeon(self.base, case, method, out)
            return Result(case.name, tool, r.seconds, r.peak_mb)
        if name == "focus" and case.train_text is not None:
            shutil.rmtree(PEERS / "focus-cache", ignore_errors=True)
            cold, warm = cold_then_warm(lambda: focus(self.base, case, out), out)
            return Result(
                case.name, tool, warm.seconds, max(cold.peak_mb, warm.peak_mb), cold.seconds
            )
        return None

    def prime(self, case: Case) -> Run:
        """tokengraft with nothing cached at all (both vocabularies embedded); afterwards the
        base vocabulary's embeddings stay cached and each target's are forgotten before its
        cold run."""
        empty_embedding_cache(keep_oldest=False)
        out = PEERS / "out" / "prime"
        shutil.rmtree(out, ignore_errors=True)
        r = tokengraft(self.base, case, "hybrid", out)
        shutil.rmtree(out)
        return r

    def tokengraft(self, case: Case, method: str | None, out: Path) -> Result | None:
        if method == "omp" and case.donor is None:
            return None
        empty_embedding_cache(keep_oldest=True)  # the base vocabulary's stay: embedded first
        cold, warm = cold_then_warm(lambda: tokengraft(self.base, case, method, out), out)
        report = json.loads(warm.stdout)
        notes = {"method": report["method"], "copied": report["vocab"]["copied"]}
        tool = f"tokengraft:{method or 'default'}"
        return Result(
            case.name,
            tool,
            warm.seconds,
            max(cold.peak_mb, warm.peak_mb),
            cold.seconds,
            notes=notes,
        )


# --- the run ------------------------------------------------------------------------------------
TOOLS = [
    "tokengraft:default", "tokengraft:hybrid", "tokengraft:omp", "tokensurgeon:subword",
    "tokensurgeon:john_hewitt", "tokensurgeon:omp", "focus",
]  # fmt: skip


def cases(base: Path, names: list[str]) -> list[Case]:
    tokenizers = target_tokenizers(base, langs=tuple(n for n in names if n != "minilm"))
    out = []
    for name in names:
        if name == "minilm":  # MiniLM's WordPiece, MiniLM itself as the donor; English text
            out.append(
                Case(name, tokenizers[name], corpus_file("en", "eval"), None, tokenizers[name])
            )
        else:
            train = corpus_file(name, "train")
            out.append(Case(name, tokenizers[name], corpus_file(name, "eval"), train, None))
    return out


def table(results: list[Result], tools: list[str]) -> str:
    """One row per case, one column per tool: ratio (warm s; cold s where cached; peak MB)."""
    head = "| case | " + " | ".join(f"`{t}`" for t in tools) + " |"
    lines = [head, "|---|" + "---|" * len(tools)]
    for case in dict.fromkeys(r.case for r in results):
        cells = [
            cell(next((r for r in results if (r.case, r.tool) == (case, t)), None)) for t in tools
        ]
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cell(r: Result | None) -> str:
    if r is None:
        return ""
    if r.ratio is None:
        return r.loads if r.loads.startswith("failed") else f"does not load ({r.loads})"
    cold = f"/{r.cold_seconds:.0f}" if r.cold_seconds is not None else ""
    return f"{r.ratio:.3f} ({r.seconds:.0f}{cold} s, {r.peak_mb / 1024:.1f} GB)"


def plot(results: list[Result], file: Path) -> None:
    """Time against quality: one point per tool and case."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    tools = list(dict.fromkeys(r.tool for r in results))
    cases_ = list(dict.fromkeys(r.case for r in results))
    markers = "o^sDvP*X"
    for r in results:
        if r.ratio is not None:
            color = f"C{cases_.index(r.case)}"
            ax.scatter(r.seconds, r.ratio, marker=markers[tools.index(r.tool)], color=color)
    for i, t in enumerate(tools):
        ax.scatter([], [], marker=markers[i], color="gray", label=t)
    for i, c in enumerate(cases_):
        ax.scatter([], [], marker="s", color=f"C{i}", label=c)
    ax.set_xscale("log")
    ax.set_xlabel("transplant wall time, s (warm where the tool caches; log scale)")
    ax.set_ylabel("bits per byte / original model's (lower is better)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    file.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(file)


def logged() -> list[Result]:
    """The last result of each (case, tool) in bench/out/peers.jsonl."""
    last = {}
    for line in LOG.read_text().splitlines():
        r = Result(**json.loads(line))
        last[(r.case, r.tool)] = r
    return list(last.values())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--eval-bytes", type=int, default=20000)
    p.add_argument("--cases", nargs="+", default=list(CASES))
    p.add_argument("--tools", nargs="+", default=TOOLS)
    p.add_argument("--plot", type=Path, default=REPO / "bench" / "plots" / "peers.svg")
    p.add_argument("--table-only", action="store_true", help="from bench/out/peers.jsonl")
    args = p.parse_args()
    if not args.table_only:
        run_cases(args)
    results = [r for r in logged() if r.case in args.cases and r.tool in args.tools]
    plot(results, args.plot)
    print(table(results, args.tools))


def run_cases(args: argparse.Namespace) -> None:
    from hypernet.sources import resolve_model

    base = resolve_model("smollm2-135m")
    tokensurgeon_env(), focus_env()  # installed before anything is timed
    bench = Bench(base, args.eval_bytes, args.tools)
    todo = cases(base, args.cases)
    prime = bench.prime(todo[0])
    print(f"tokengraft, nothing cached ({todo[0].name}): {prime.seconds:.0f} s", flush=True)
    results = [r for case in todo for r in bench.case(case)]
    write_json(
        OUT / "peers.json",
        {
            "eval_bytes": args.eval_bytes,
            "prime_s": prime.seconds,
            "results": [asdict(r) for r in results],
        },
    )


if __name__ == "__main__":
    main()
