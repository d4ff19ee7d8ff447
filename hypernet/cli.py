"""The library's commands: transplant, refine, eval, tokenizer, models, hypernet and methods.

`service.cli` (the `tokengraft` command) adds the service's commands to these; `python -m
hypernet.cli` runs these alone, as the benchmarks do. Commands only parse arguments and print:
the work is in the library, imported inside each command so that parsing, `--help` and the
service's commands never load torch or transformers. Bad input ends with a one-line message and
exit status 2.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Callable, Collection, Sequence
from dataclasses import MISSING, Field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args, get_origin, get_type_hints

from hypernet.cuts import CUTS
from hypernet.errors import Cancelled, InputError
from hypernet.network.config import HyperConfig, TrainConfig

if TYPE_CHECKING:
    from hypernet.refine import RefineConfig
    from hypernet.report import Report

Command = Callable[[argparse.Namespace], int]
Subparsers = Any  # what ArgumentParser.add_subparsers returns (a private argparse class)

DESCRIPTION = "Give a pretrained language model a new tokenizer."
MODEL_HELP = "a model folder, a cached hub id, a .gguf file, or the bundled smollm2-135m"


# --- running a command -----------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    return run(parser().parse_args(argv))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tokengraft", description=DESCRIPTION)
    add_parsers(p.add_subparsers(dest="command", required=True))
    return p


def run(args: argparse.Namespace) -> int:
    """Run the parsed command; the errors a user can cause end in one line, not a traceback."""
    func: Command = args.func
    try:
        return func(args)
    except InputError as e:
        print(f"tokengraft: error: {e}", file=sys.stderr)
        return 2
    except Cancelled as e:
        print(f"tokengraft: {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("tokengraft: interrupted; nothing was written", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def quiet_transformers(cmd: Command) -> Command:
    """Transformers' warnings and progress bars off for `cmd`: our own bars and messages say
    what matters. Set as the command starts, so that commands without a model never import it."""

    @functools.wraps(cmd)
    def quietly(args: argparse.Namespace) -> int:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        return cmd(args)

    return quietly


def add_parsers(sub: Subparsers) -> None:
    """Every library command, in the order `--help` lists them."""
    for add in (
        add_transplant_parser,
        add_refine_parser,
        add_eval_parser,
        add_tokenizer_parser,
        add_models_parser,
        add_hypernet_parser,
        add_methods_parser,
    ):
        add(sub)


class _Bars:
    """One tqdm bar per stage on stderr, so --json output on stdout stays clean."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar = None
        self.stage = ""

    def __call__(self, stage: str, fraction: float, detail: dict | None = None) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if stage != self.stage:
            self.close()
            self.stage = stage
            self.bar = tqdm(total=100, desc=f"{stage:<9}", unit="%", file=sys.stderr, leave=True)
        assert self.bar is not None
        self.bar.n = round(100 * fraction)
        if detail:
            self.bar.set_postfix(detail, refresh=False)
        self.bar.refresh()

    def __enter__(self) -> _Bars:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# --- transplant and refine -------------------------------------------------------------------
def add_transplant_parser(sub: Subparsers) -> None:
    t = sub.add_parser("transplant", help="predict embeddings for a new tokenizer")
    t.add_argument("--model", required=True, help=MODEL_HELP)
    t.add_argument("--tokenizer", required=True, help="a folder, a tokenizer.json, or a hub id")
    t.add_argument("--out", required=True, help="output folder (must not exist)")
    t.add_argument(
        "--method",
        help="see `tokengraft methods` (default: hypernet+hybrid when a hypernetwork was "
        "trained for the base model, else hybrid)",
    )
    t.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="method option, e.g. k=8, temperature=0.05, weight=0.3",
    )
    t.add_argument("--donor", help="a model that already uses the new tokenizer (method omp)")
    t.add_argument("--eval-text", help="text file to measure bits per byte before and after")
    t.add_argument("--eval-bytes", type=int, help="evaluate on at most this many bytes")
    t.add_argument("--embedder", help="text-embedding model folder (default: all-MiniLM-L6-v2)")
    t.add_argument("--hypernet", help="a trained hypernetwork folder or store name (hypernet*)")
    t.add_argument(
        "--refine-text",
        nargs="+",
        metavar="FILE",
        help="unlabeled text: refine the rows against the base model on it",
    )
    _add_refine_budget(t, "--refine-")
    t.add_argument("--json", action="store_true", help="print the report as JSON")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.set_defaults(func=cmd_transplant)


def add_refine_parser(sub: Subparsers) -> None:
    r = sub.add_parser("refine", help="refine a transplanted checkpoint against its base model")
    r.add_argument("--model", required=True, help="the transplanted checkpoint folder")
    r.add_argument("--teacher", required=True, help="the base model it came from; " + MODEL_HELP)
    r.add_argument("--text", required=True, nargs="+", help="unlabeled UTF-8 text file(s)")
    r.add_argument("--out", required=True, help="output folder (must not exist)")
    _add_refine_budget(r, "--")
    r.add_argument("--eval-text", help="text file to measure bits per byte before and after")
    r.add_argument("--eval-bytes", type=int, help="evaluate on at most this many bytes")
    r.add_argument("--json", action="store_true", help="print the report as JSON")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.set_defaults(func=cmd_refine)


def _add_refine_budget(p: argparse.ArgumentParser, prefix: str) -> None:
    """The refine budget and rows, as --refine-* on transplant and --* on refine; both land in
    args.refine_minutes, args.refine_steps and args.refine_rows."""
    p.add_argument(
        f"{prefix}minutes",
        dest="refine_minutes",
        type=float,
        metavar="N",
        help="refine time budget (default 10)",
    )
    p.add_argument(
        f"{prefix}steps",
        dest="refine_steps",
        type=int,
        metavar="N",
        help="refine at most this many steps",
    )
    p.add_argument(
        f"{prefix}rows",
        dest="refine_rows",
        choices=["new", "all"],
        default="new",
        help="rows to train: those predicted (default) or every row",
    )


@quiet_transformers
def cmd_transplant(args: argparse.Namespace) -> int:
    from hypernet.transplant import TransplantRequest, transplant

    request = TransplantRequest(
        model=args.model,
        tokenizer=args.tokenizer,
        out=Path(args.out),
        method=args.method,
        options=_options(args.option),
        donor=args.donor,
        eval_text=_optional_path(args.eval_text),
        eval_bytes=args.eval_bytes,
        embedder=_optional_path(args.embedder),
        hypernet=args.hypernet,
        refine=_refine_config(args) if args.refine_text else None,
        refine_texts=[Path(t) for t in args.refine_text or []],
    )
    with _Bars(not args.quiet) as bars:
        report = transplant(request, progress=bars)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        _print_transplant(report, args.out)
    return 0


def _print_transplant(report: Report, out: str) -> None:
    v = report.vocab
    print(f"wrote {out}  ({report.method}; {v['new_vocab_size']} tokens)")
    print(f"  method: {report.method_choice}")
    print(
        f"  copied {v['copied']} ({v['overlap']:.1%}), specials by role {v['specials_by_role']}, "
        f"predicted {v['predicted']}, mean fallback {v['mean_fallback']}, "
        f"unused placeholders {v['unused']}"
    )
    if report.eval:
        e = report.eval
        print(
            f"  bits/byte {e['before']['bits_per_byte']:.4f} -> {e['after']['bits_per_byte']:.4f}"
            f" (x{e['ratio']:.3f}); tokens/byte {e['before']['tokens_per_byte']:.4f} -> "
            f"{e['after']['tokens_per_byte']:.4f}; {e['copied_share']:.1%} of eval tokens copied"
        )
    if report.refine:
        _print_refine(report.refine)
    print("  " + ", ".join(f"{k} {t:.1f}s" for k, t in report.timings.items()))


@quiet_transformers
def cmd_refine(args: argparse.Namespace) -> int:
    from hypernet.transplant import RefineRequest, refine_checkpoint

    request = RefineRequest(
        model=args.model,
        teacher=args.teacher,
        texts=[Path(t) for t in args.text],
        out=Path(args.out),
        config=_refine_config(args),
        eval_text=_optional_path(args.eval_text),
        eval_bytes=args.eval_bytes,
    )
    with _Bars(not args.quiet) as bars:
        report = refine_checkpoint(request, progress=bars)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"wrote {args.out}")
    _print_refine(report["refine"])
    return 0


def _print_refine(r: dict) -> None:
    print(
        f"  refined {r['trained_rows']} rows ({r['rows']}): {r['steps']} steps in "
        f"{r['minutes']:.1f} min on {r['text_bytes']} bytes; loss {r['loss_before']:.4f} -> "
        f"{r['loss_after']:.4f}"
    )
    if "eval" in r:
        e = r["eval"]
        print(
            f"  bits/byte zero-shot {e['before']:.4f} (x{e['ratio_before']:.3f}) -> refined "
            f"{e['after']:.4f} (x{e['ratio_after']:.3f})"
        )


def _refine_config(args: argparse.Namespace) -> RefineConfig:
    from hypernet.refine import RefineConfig

    return RefineConfig.budget(args.refine_minutes, args.refine_steps, args.refine_rows)


def _options(pairs: Sequence[str]) -> dict:
    """--option k=8 --option temperature=0.1 -> {"k": 8, "temperature": 0.1}."""
    out: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"--option expects key=value, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _optional_path(value: str | None) -> Path | None:
    return Path(value) if value else None


# --- eval, tokenizer, models, methods --------------------------------------------------------
def add_eval_parser(sub: Subparsers) -> None:
    e = sub.add_parser("eval", help="bits per byte and tokens per byte of a causal LM on a text")
    e.add_argument("--model", required=True, help=MODEL_HELP)
    e.add_argument("--text", required=True, help="UTF-8 text file")
    e.add_argument("--max-bytes", type=int, help="use at most this many bytes of the text")
    e.add_argument("--window", type=int, default=1024, help="context window in tokens")
    e.add_argument("--stride", type=int, default=512, help="tokens scored per window")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=cmd_eval)


@quiet_transformers
def cmd_eval(args: argparse.Namespace) -> int:
    from hypernet.evaluate import evaluate_folder
    from hypernet.sources import resolve_model
    from hypernet.texts import read_eval_text

    text = read_eval_text(Path(args.text), args.max_bytes)
    if not text:
        raise InputError(f"{args.text} is empty")
    with _Bars(not args.quiet) as bars:
        result = evaluate_folder(
            resolve_model(args.model),
            text,
            window=args.window,
            stride=args.stride,
            progress=lambda f: bars("evaluate", f),
        )
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(
            f"bits/byte {result.bits_per_byte:.4f}  tokens/byte {result.tokens_per_byte:.4f}  "
            f"({result.tokens} tokens, {result.bytes} bytes)"
        )
    return 0


def add_tokenizer_parser(sub: Subparsers) -> None:
    tok = sub.add_parser("tokenizer", help="tokenizer tools").add_subparsers(
        dest="tokenizer_command", required=True
    )
    tt = tok.add_parser("train", help="train a BPE, Unigram or WordPiece tokenizer")
    tt.add_argument("--corpus", required=True, nargs="+", help="UTF-8 text file(s)")
    tt.add_argument("--kind", choices=["bpe", "unigram", "wordpiece"], default="bpe")
    tt.add_argument("--vocab-size", type=int, default=32000)
    tt.add_argument("--like", help="copy this model's special tokens, family and chat template")
    tt.add_argument(
        "--cut",
        choices=list(CUTS),
        default="like",
        help="cut text as this family does before merges (default: as --like's tokenizer)",
    )
    tt.add_argument("--max-bytes", type=int, help="read at most this many corpus bytes")
    tt.add_argument("--out", required=True, help="output folder (must not exist)")
    tt.add_argument("--quiet", action="store_true")
    tt.set_defaults(func=cmd_tokenizer_train)


@quiet_transformers
def cmd_tokenizer_train(args: argparse.Namespace) -> int:
    from hypernet.sources import resolve_model
    from hypernet.tokenizer_train import train_tokenizer

    like = resolve_model(args.like) if args.like else None
    corpus = [Path(c) for c in args.corpus]
    out = train_tokenizer(
        corpus,
        args.kind,
        args.vocab_size,
        Path(args.out),
        like=like,
        max_bytes=args.max_bytes,
        progress=not args.quiet,
        cut=args.cut,
    )
    print(f"wrote {out}")
    return 0


def add_models_parser(sub: Subparsers) -> None:
    m = sub.add_parser("models", help="model tools").add_subparsers(
        dest="models_command", required=True
    )
    mi = m.add_parser("import-gguf", help="convert a GGUF file into a safetensors model folder")
    mi.add_argument("file")
    mi.add_argument("--out", required=True)
    mi.set_defaults(func=cmd_models_import)
    mb = m.add_parser("bundled", help="list bundled models, or build one and print its folder")
    mb.add_argument("name", nargs="?")
    mb.set_defaults(func=cmd_models_bundled)


@quiet_transformers
def cmd_models_import(args: argparse.Namespace) -> int:
    from hypernet.sources import import_gguf

    print(import_gguf(Path(args.file), Path(args.out)))
    return 0


@quiet_transformers
def cmd_models_bundled(args: argparse.Namespace) -> int:
    from hypernet.sources import BUNDLED, resolve_model

    if args.name is None:
        for name in BUNDLED:
            print(name)
        return 0
    print(resolve_model(args.name))
    return 0


def add_methods_parser(sub: Subparsers) -> None:
    sub.add_parser("methods", help="list transplant methods").set_defaults(func=cmd_methods)


@quiet_transformers
def cmd_methods(args: argparse.Namespace) -> int:
    from hypernet.methods import METHODS

    for spec in METHODS.values():
        needs = f"  (needs: {', '.join(spec.needs)})" if spec.needs else ""
        print(f"{spec.name:<18}{spec.summary}{needs}")
    return 0


# --- the hypernetwork ------------------------------------------------------------------------
def add_hypernet_parser(sub: Subparsers) -> None:
    h = sub.add_parser("hypernet", help="the hypernetwork").add_subparsers(
        dest="hypernet_command", required=True
    )
    for add in (_add_hypernet_train, _add_hypernet_list, _add_hypernet_show, _add_hypernet_predict):
        add(h)


def _add_hypernet_train(h: Subparsers) -> None:
    """The recipe's flags come from TrainConfig's and HyperConfig's fields."""
    ht = h.add_parser("train", help="train a hypernetwork for a base model")
    ht.add_argument("--model", required=True, help=MODEL_HELP)
    ht.add_argument("--corpus", nargs="+", help="UTF-8 text file(s) (a resumed run keeps its own)")
    ht.add_argument("--out", required=True, help="output folder (must not exist unless --resume)")
    ht.add_argument("--resume", action="store_true", help="continue from --out's checkpoint")
    add_dataclass_flags(ht, TrainConfig)
    add_dataclass_flags(ht, HyperConfig, skip=HyperConfig.FROM_BASE)
    ht.add_argument("--quiet", action="store_true", help="no progress bar (held-out scores still)")
    ht.set_defaults(func=cmd_hypernet_train)


def _add_hypernet_list(h: Subparsers) -> None:
    hl = h.add_parser(
        "list",
        help="hypernetworks in the given folders (default: the store, then the shipped ones)",
    )
    hl.add_argument("dirs", nargs="*", help="folders that hold hypernetwork folders")
    hl.set_defaults(func=cmd_hypernet_list)


def _add_hypernet_show(h: Subparsers) -> None:
    hs = h.add_parser("show", help="a hypernetwork's fingerprint, recipe and held-out scores")
    hs.add_argument("hypernet", help="a hypernetwork folder or store name")
    hs.set_defaults(func=cmd_hypernet_show)


def _add_hypernet_predict(h: Subparsers) -> None:
    hp = h.add_parser("predict", help="embedding rows for token strings (no transplant)")
    hp.add_argument("--hypernet", required=True, help="a hypernetwork folder or store name")
    hp.add_argument("--model", required=True, help=MODEL_HELP)
    hp.add_argument("--token", action="append", default=[], help='a token, e.g. " Haus"')
    hp.add_argument("--tokens-json", help="a JSON file holding a list of token strings")
    hp.add_argument("--out", required=True, help="output .safetensors file (must not exist)")
    hp.set_defaults(func=cmd_hypernet_predict)


@quiet_transformers
def cmd_hypernet_train(args: argparse.Namespace) -> int:
    from hypernet.network.training import Trainer
    from hypernet.sources import resolve_model

    out = Path(args.out)
    config, hyper, corpus = _train_recipe(args, out)
    trainer = Trainer(
        resolve_model(args.model),
        corpus,
        out,
        config,
        hyper,
        base_name=args.model,
        log=lambda message: print(message, file=sys.stderr, flush=True),
    )
    if args.resume:
        trainer.resume()
    else:
        out.mkdir(parents=True)
    trainer.fit(progress=not args.quiet)
    last = trainer.scores[-1]
    print(f"wrote {out}  (step {trainer.step}, {trainer.elapsed / 60:.1f} min; held-out {last})")
    return 0


def _train_recipe(
    args: argparse.Namespace, out: Path
) -> tuple[TrainConfig, HyperConfig, list[Path]]:
    """The flags over the defaults for a new run; with --resume, the saved recipe, whose
    budget alone the flags may change."""
    from hypernet.files import require_absent
    from hypernet.network.training import resume_recipe

    train, net = given_fields(TrainConfig, args), given_fields(HyperConfig, args)
    corpus = [Path(c) for c in args.corpus or []]
    if args.resume:
        return resume_recipe(out, train | net, corpus)
    if not corpus:
        raise InputError("no corpus files given (--corpus FILE...)")
    require_absent(out)
    return TrainConfig(**train), HyperConfig(**net), corpus


def _hypernet_summary(folder: Path) -> dict:
    from dataclasses import asdict

    from hypernet.network.model import read_meta

    meta = read_meta(folder)
    held_out = meta.scores.get("held_out") or [{}]
    return {"path": str(folder), **asdict(meta), "last_held_out": held_out[-1]}


@quiet_transformers
def cmd_hypernet_list(args: argparse.Namespace) -> int:
    from hypernet.network.store import default_roots, list_hypernets

    roots = [Path(d) for d in args.dirs] or default_roots()
    found = list_hypernets(roots)
    if not found:
        print(f"no hypernetworks in {', '.join(map(str, roots))}", file=sys.stderr)
    for folder in found:
        s = _hypernet_summary(folder)
        r = s["recipe"]
        print(
            f"{folder}  base {s['base_model']} ({s['fingerprint']['architecture']}), "
            f"{r.get('steps_done')} steps, {r.get('minutes')} min; held-out {s['last_held_out']}"
        )
    return 0


@quiet_transformers
def cmd_hypernet_show(args: argparse.Namespace) -> int:
    from hypernet.network.store import resolve_hypernet

    print(json.dumps(_hypernet_summary(resolve_hypernet(args.hypernet)), indent=2))
    return 0


@quiet_transformers
def cmd_hypernet_predict(args: argparse.Namespace) -> int:
    from safetensors.torch import save_file

    from hypernet.files import atomic_write, require_absent
    from hypernet.network.predict import predict_embeddings

    tokens = list(args.token) + (_tokens_json(Path(args.tokens_json)) if args.tokens_json else [])
    if not tokens:
        raise InputError("no tokens given (--token TEXT or --tokens-json FILE)")
    out = Path(args.out)
    require_absent(out)
    rows = predict_embeddings(args.hypernet, args.model, tokens)
    metadata = {"tokens": json.dumps(tokens, ensure_ascii=False), "hypernet": str(args.hypernet)}
    with atomic_write(out) as tmp:
        save_file({k: v.contiguous() for k, v in rows.items()}, str(tmp), metadata=metadata)
    shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in rows.items())
    print(f"wrote {out}  ({shapes})")
    return 0


def _tokens_json(path: Path) -> list[str]:
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read {path}: {e}") from None
    if not isinstance(loaded, list) or not all(isinstance(t, str) for t in loaded):
        raise InputError(f"{path} must hold a JSON list of strings")
    return loaded


# --- flags from a dataclass ------------------------------------------------------------------
def add_dataclass_flags(p: argparse.ArgumentParser, cls: type, skip: Collection[str] = ()) -> None:
    """A flag per field of the dataclass `cls`, named, typed and explained by the field, so a
    new setting is a flag at once. Flags default to None: one left out is not in
    `given_fields`, and a resumed run can tell a setting given from a default."""
    hints = get_type_hints(cls)
    for f in fields(cls):
        if f.name not in skip:
            p.add_argument(_flag(f), dest=f.name, help=_help(f), **_parsed_as(hints[f.name], f))


def given_fields(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The fields of `cls` set on the command line, NAME=VALUE lists as dicts."""
    hints = get_type_hints(cls)
    return {
        f.name: _field_value(hints[f.name], getattr(args, f.name), _flag(f))
        for f in fields(cls)
        if getattr(args, f.name, None) is not None
    }


def _flag(f: Field) -> str:
    return f.metadata.get("flag", "--" + f.name.replace("_", "-"))


def _help(f: Field) -> str:
    plain = f.default is not MISSING and f.default is not None
    return f.metadata.get("help", "") + (f" (default {f.default})" if plain else "")


def _parsed_as(hint: Any, f: Field) -> dict[str, Any]:
    """argparse's arguments for a field typed `hint`: a switch, a repeated NAME=VALUE (parsed
    by `given_fields`, so that a bad one is an InputError), or one value of the type."""
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction}
    if get_origin(hint) is dict:
        return {"action": "append", "metavar": f.metadata.get("metavar", "NAME=VALUE")}
    return {"type": next((t for t in get_args(hint) if t is not type(None)), hint)}


def _field_value(hint: Any, value: Any, flag: str) -> Any:
    return _named_values(value, get_args(hint)[1], flag) if get_origin(hint) is dict else value


def _named_values(items: list[str], kind: type, flag: str) -> dict[str, Any]:
    """NAME=VALUE pairs (a corpus file's stem and a number)."""
    out = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            out[name] = kind(value)
        except ValueError:
            raise InputError(
                f"{flag} wants NAME=NUMBER (a corpus file's stem), not {item!r}"
            ) from None
    return out


if __name__ == "__main__":
    sys.exit(main())
