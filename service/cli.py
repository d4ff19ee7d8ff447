"""The `tokengraft` command: every job a user does locally, as a subcommand.

The commands only parse arguments and print; the work is in the `hypernet` library. Bad input
ends with a one-line message and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path

from hypernet.errors import Cancelled, InputError


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

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


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


def cmd_transplant(args: argparse.Namespace) -> int:
    from hypernet.transplant import TransplantRequest, transplant

    bars = _Bars(not args.quiet)
    request = TransplantRequest(
        model=args.model,
        tokenizer=args.tokenizer,
        out=Path(args.out),
        method=args.method,
        options=_options(args.option),
        donor=args.donor,
        eval_text=Path(args.eval_text) if args.eval_text else None,
        eval_bytes=args.eval_bytes,
        embedder=Path(args.embedder) if args.embedder else None,
        hypernet=args.hypernet,
        refine=_refine_config(args) if args.refine_text else None,
        refine_texts=[Path(t) for t in args.refine_text or []],
    )
    try:
        report = transplant(request, progress=bars)
    finally:
        bars.close()
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    v = report.vocab
    print(f"wrote {args.out}  ({report.method}; {v['new_vocab_size']} tokens)")
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
    return 0


def _refine_config(args: argparse.Namespace):  # noqa: ANN202 (hypernet.refine.RefineConfig)
    from hypernet.refine import RefineConfig

    return RefineConfig.budget(args.refine_minutes, args.refine_steps, args.refine_rows)


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


def cmd_refine(args: argparse.Namespace) -> int:
    from hypernet.transplant import RefineRequest, refine_checkpoint

    bars = _Bars(not args.quiet)
    request = RefineRequest(
        model=args.model, teacher=args.teacher, texts=[Path(t) for t in args.text],
        out=Path(args.out), config=_refine_config(args),
        eval_text=Path(args.eval_text) if args.eval_text else None, eval_bytes=args.eval_bytes,
    )  # fmt: skip
    try:
        report = refine_checkpoint(request, progress=bars)
    finally:
        bars.close()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"wrote {args.out}")
    _print_refine(report["refine"])
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from hypernet.evaluate import evaluate_folder
    from hypernet.sources import resolve_model
    from hypernet.texts import read_eval_text

    text = read_eval_text(Path(args.text), args.max_bytes)
    if not text:
        raise InputError(f"{args.text} is empty")
    bars = _Bars(not args.quiet)
    try:
        result = evaluate_folder(
            resolve_model(args.model), text, window=args.window, stride=args.stride,
            progress=lambda f: bars("evaluate", f),
        )  # fmt: skip
    finally:
        bars.close()
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(
            f"bits/byte {result.bits_per_byte:.4f}  tokens/byte {result.tokens_per_byte:.4f}  "
            f"({result.tokens} tokens, {result.bytes} bytes)"
        )
    return 0


def cmd_tokenizer_train(args: argparse.Namespace) -> int:
    from hypernet.sources import resolve_model
    from hypernet.tokenizer_train import train_tokenizer

    like = resolve_model(args.like) if args.like else None
    out = train_tokenizer(
        [Path(c) for c in args.corpus], args.kind, args.vocab_size, Path(args.out), like=like,
        max_bytes=args.max_bytes, progress=not args.quiet,
    )  # fmt: skip
    print(f"wrote {out}")
    return 0


def cmd_models_import(args: argparse.Namespace) -> int:
    from hypernet.sources import import_gguf

    print(import_gguf(Path(args.file), Path(args.out)))
    return 0


def cmd_models_bundled(args: argparse.Namespace) -> int:
    from hypernet.sources import BUNDLED, resolve_model

    if args.name is None:
        for name in BUNDLED:
            print(name)
        return 0
    print(resolve_model(args.name))
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from hypernet.methods import METHODS

    for spec in METHODS.values():
        needs = f"  (needs: {', '.join(spec.needs)})" if spec.needs else ""
        print(f"{spec.name:<18}{spec.summary}{needs}")
    return 0


def cmd_hypernet_train(args: argparse.Namespace) -> int:
    from hypernet.files import require_absent
    from hypernet.network.model import HyperConfig
    from hypernet.network.training import TrainConfig, Trainer, resume_recipe
    from hypernet.sources import resolve_model

    out = Path(args.out)
    given = {k: v for k, v in vars(args).items() if v is not None}
    given |= {
        k: _named_values(given[k], k) for k in ("corpus_weights", "corpus_seq_len") if k in given
    }
    corpus = [Path(c) for c in args.corpus or []]
    if args.resume:
        config, hyper, corpus = resume_recipe(out, given, corpus)
    elif not corpus:
        raise InputError("no corpus files given (--corpus FILE...)")
    else:
        require_absent(out)
        config = TrainConfig(
            **{f.name: given[f.name] for f in fields(TrainConfig) if f.name in given}
        )
        hyper = HyperConfig(
            **{f.name: given[f.name] for f in fields(HyperConfig) if f.name in given}
        )
    trainer = Trainer(
        resolve_model(args.model), corpus, out, config, hyper,
        base_name=args.model, log=lambda message: print(message, file=sys.stderr, flush=True),
    )  # fmt: skip
    if args.resume:
        trainer.resume()
    else:
        out.mkdir(parents=True)
    trainer.fit(progress=not args.quiet)
    last = trainer.scores[-1]
    print(f"wrote {out}  (step {trainer.step}, {trainer.elapsed / 60:.1f} min; held-out {last})")
    return 0


def _named_values(items: list[str], flag: str) -> dict[str, float]:
    """NAME=VALUE pairs (a corpus file's stem and a number)."""
    out = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            out[name] = float(value) if flag == "corpus_weights" else int(value)
        except ValueError:
            option = "--" + flag.replace("_", "-")
            raise InputError(
                f"{option} wants NAME=NUMBER (a corpus file's stem), not {item!r}"
            ) from None
    return out


def _hypernet_summary(folder: Path) -> dict:
    from dataclasses import asdict

    from hypernet.network.model import read_meta

    meta = read_meta(folder)
    held_out = meta.scores.get("held_out") or [{}]
    return {"path": str(folder), **asdict(meta), "last_held_out": held_out[-1]}


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


def cmd_hypernet_show(args: argparse.Namespace) -> int:
    from hypernet.network.store import resolve_hypernet

    print(json.dumps(_hypernet_summary(resolve_hypernet(args.hypernet)), indent=2))
    return 0


def cmd_hypernet_predict(args: argparse.Namespace) -> int:
    from safetensors.torch import save_file

    from hypernet.files import atomic_write, require_absent
    from hypernet.network.predict import predict_embeddings

    tokens = list(args.token)
    if args.tokens_json:
        try:
            loaded = json.loads(Path(args.tokens_json).read_text())
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read {args.tokens_json}: {e}") from None
        if not isinstance(loaded, list) or not all(isinstance(t, str) for t in loaded):
            raise InputError(f"{args.tokens_json} must hold a JSON list of strings")
        tokens += loaded
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


def _settings(args: argparse.Namespace):  # noqa: ANN202 (service.config.Settings, imported late)
    from service.config import Settings

    given = {"data_dir": args.data_dir, "database_url": args.database_url}
    given |= {"corpora_dir": getattr(args, "corpora_dir", None)}
    return Settings(**{k: v for k, v in given.items() if v is not None})


def _services(args: argparse.Namespace):  # noqa: ANN202 (service.services.Services)
    """The service's objects on a database brought to the current schema first."""
    from service.migrate import upgrade
    from service.services import Services

    settings = _settings(args)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.url)
    return Services.build(settings)


def cmd_migrate(args: argparse.Namespace) -> int:
    from service.migrate import upgrade

    settings = _settings(args)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.url)
    print(f"database at the current schema: {_redacted(settings.url)}")
    return 0


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


LOOPBACK = ("127.0.0.1", "::1", "localhost")


def cmd_serve(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    from service import keys
    from service.api.main import create_app

    services = _services(args)
    settings = services.settings
    try:
        if args.host not in LOOPBACK and not keys.any_active(services.sessions):
            raise InputError(
                f"refusing to listen on {args.host} without API keys: create one with "
                "`tokengraft keys create NAME`, or serve on 127.0.0.1"
            )
    finally:
        services.engine.dispose()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    app = create_app(settings, worker=not args.no_worker)
    print(f"tokengraft serving on http://{args.host}:{args.port} (data in {settings.data_dir})",
          file=sys.stderr)  # fmt: skip
    # httptools parses HTTP fast; the asyncio loop, unlike uvloop, served 16 pollers without
    # 100-300 ms stragglers (bench/polling.py)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", loop="asyncio",
                http="httptools")  # fmt: skip
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    import logging
    import signal

    from service.worker import Worker

    services = _services(args)
    worker = Worker(services.settings, services.queue, services.storage, services.catalog)

    def on_signal(signum: int, frame: object) -> None:
        if worker.stop.is_set() or signum == signal.SIGINT:
            worker.abandon.set()  # asked twice, or Ctrl-C: give the job back now
        worker.stop.set()  # stop claiming; the current job finishes

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        worker.run()
    finally:
        services.engine.dispose()
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    from service import keys

    row, key = keys.create(_services(args).sessions, args.name, args.scope)
    print(key)
    print(f"key {row.id} ({row.scope}) created; it is shown only once", file=sys.stderr)
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    from service import keys

    for row in keys.all_keys(_services(args).sessions):
        state = f"revoked {row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "active"
        print(f"{row.id}  {row.scope:<5}  {state:<24}  {row.name}")
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    from service import keys

    if not keys.revoke(_services(args).sessions, args.id):
        raise InputError(f"no API key {args.id}")
    print(f"revoked {args.id}")
    return 0


def cmd_openapi(args: argparse.Namespace) -> int:
    import yaml

    from service.api.main import create_app

    print(yaml.safe_dump(create_app().openapi(), sort_keys=False, allow_unicode=True), end="")
    return 0


def _refine_arguments(p: argparse.ArgumentParser, prefix: str) -> None:
    """The refine budget and rows, as --refine-* on transplant and --* on refine; both land in
    args.refine_minutes, args.refine_steps and args.refine_rows."""
    p.add_argument(f"{prefix}minutes", dest="refine_minutes", type=float, metavar="N",
                   help="refine time budget (default 10)")  # fmt: skip
    p.add_argument(f"{prefix}steps", dest="refine_steps", type=int, metavar="N",
                   help="refine at most this many steps")  # fmt: skip
    p.add_argument(f"{prefix}rows", dest="refine_rows", choices=["new", "all"], default="new",
                   help="rows to train: those predicted (default) or every row")  # fmt: skip


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tokengraft", description="Give a pretrained language model a new tokenizer."
    )
    sub = p.add_subparsers(dest="command", required=True)
    model_help = "a model folder, a cached hub id, a .gguf file, or the bundled smollm2-135m"

    t = sub.add_parser("transplant", help="predict embeddings for a new tokenizer")
    t.add_argument("--model", required=True, help=model_help)
    t.add_argument("--tokenizer", required=True, help="a folder, a tokenizer.json, or a hub id")
    t.add_argument("--out", required=True, help="output folder (must not exist)")
    t.add_argument(
        "--method",
        help="see `tokengraft methods` (default: hypernet+hybrid when a hypernetwork was "
        "trained for the base model, else hybrid)",
    )
    t.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="method option, e.g. k=8, temperature=0.05, weight=0.3")  # fmt: skip
    t.add_argument("--donor", help="a model that already uses the new tokenizer (method omp)")
    t.add_argument("--eval-text", help="text file to measure bits per byte before and after")
    t.add_argument("--eval-bytes", type=int, help="evaluate on at most this many bytes")
    t.add_argument("--embedder", help="text-embedding model folder (default: all-MiniLM-L6-v2)")
    t.add_argument("--hypernet", help="a trained hypernetwork folder or store name (hypernet*)")
    t.add_argument("--refine-text", nargs="+", metavar="FILE",
                   help="unlabeled text: refine the rows against the base model on it")  # fmt: skip
    _refine_arguments(t, "--refine-")
    t.add_argument("--json", action="store_true", help="print the report as JSON")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.set_defaults(func=cmd_transplant)

    r = sub.add_parser("refine", help="refine a transplanted checkpoint against its base model")
    r.add_argument("--model", required=True, help="the transplanted checkpoint folder")
    r.add_argument("--teacher", required=True, help="the base model it came from; " + model_help)
    r.add_argument("--text", required=True, nargs="+", help="unlabeled UTF-8 text file(s)")
    r.add_argument("--out", required=True, help="output folder (must not exist)")
    _refine_arguments(r, "--")
    r.add_argument("--eval-text", help="text file to measure bits per byte before and after")
    r.add_argument("--eval-bytes", type=int, help="evaluate on at most this many bytes")
    r.add_argument("--json", action="store_true", help="print the report as JSON")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.set_defaults(func=cmd_refine)

    e = sub.add_parser("eval", help="bits per byte and tokens per byte of a causal LM on a text")
    e.add_argument("--model", required=True, help=model_help)
    e.add_argument("--text", required=True, help="UTF-8 text file")
    e.add_argument("--max-bytes", type=int, help="use at most this many bytes of the text")
    e.add_argument("--window", type=int, default=1024, help="context window in tokens")
    e.add_argument("--stride", type=int, default=512, help="tokens scored per window")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=cmd_eval)

    tok = sub.add_parser("tokenizer", help="tokenizer tools").add_subparsers(
        dest="tokenizer_command", required=True
    )
    tt = tok.add_parser("train", help="train a BPE, Unigram or WordPiece tokenizer")
    tt.add_argument("--corpus", required=True, nargs="+", help="UTF-8 text file(s)")
    tt.add_argument("--kind", choices=["bpe", "unigram", "wordpiece"], default="bpe")
    tt.add_argument("--vocab-size", type=int, default=32000)
    tt.add_argument("--like", help="copy this model's special tokens, family and chat template")
    tt.add_argument("--max-bytes", type=int, help="read at most this many corpus bytes")
    tt.add_argument("--out", required=True, help="output folder (must not exist)")
    tt.add_argument("--quiet", action="store_true")
    tt.set_defaults(func=cmd_tokenizer_train)

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

    h = sub.add_parser("hypernet", help="the hypernetwork").add_subparsers(
        dest="hypernet_command", required=True
    )
    ht = h.add_parser("train", help="train a hypernetwork for a base model")
    ht.add_argument("--model", required=True, help=model_help)
    ht.add_argument("--corpus", nargs="+", help="UTF-8 text file(s) (a resumed run keeps its own)")
    ht.add_argument("--out", required=True, help="output folder (must not exist unless --resume)")
    ht.add_argument("--resume", action="store_true", help="continue from --out's checkpoint")
    ht.add_argument("--max-minutes", type=float, help="time budget; the schedule ends with it")
    ht.add_argument("--steps", type=int, help="at most this many steps (default 5000)")
    ht.add_argument("--lr", type=float)
    ht.add_argument("--batch", type=int, help="sequences per step")
    ht.add_argument("--seq-len", type=int)
    ht.add_argument("--lm-weight", type=float)
    ht.add_argument("--aux-weight", type=float)
    ht.add_argument("--rec-weight", type=float)
    ht.add_argument("--eval-every", type=int)
    ht.add_argument("--max-pieces", type=int)
    ht.add_argument("--width", type=int)
    ht.add_argument("--layers", type=int)
    ht.add_argument("--heads", type=int)
    ht.add_argument("--seed", type=int)
    ht.add_argument(
        "--copied-rows", action="store_const", const=True,
        help="copied tokens get the network's rows too (the copy plus a learned correction)",
    )  # fmt: skip
    ht.add_argument(
        "--corpus-weight", dest="corpus_weights", action="append", metavar="NAME=W",
        help="draw corpus NAME (file stem) W times as often (default 1)",
    )  # fmt: skip
    ht.add_argument(
        "--corpus-seq-len", action="append", metavar="NAME=N",
        help="sequences of N tokens for corpus NAME (e.g. longer ones for code)",
    )  # fmt: skip
    ht.add_argument("--quiet", action="store_true", help="no progress bar (held-out scores still)")
    ht.set_defaults(func=cmd_hypernet_train)
    hl = h.add_parser(
        "list",
        help="hypernetworks in the given folders (default: the store, then the shipped ones)",
    )
    hl.add_argument("dirs", nargs="*", help="folders that hold hypernetwork folders")
    hl.set_defaults(func=cmd_hypernet_list)
    hs = h.add_parser("show", help="a hypernetwork's fingerprint, recipe and held-out scores")
    hs.add_argument("hypernet", help="a hypernetwork folder or store name")
    hs.set_defaults(func=cmd_hypernet_show)
    hp = h.add_parser("predict", help="embedding rows for token strings (no transplant)")
    hp.add_argument("--hypernet", required=True, help="a hypernetwork folder or store name")
    hp.add_argument("--model", required=True, help=model_help)
    hp.add_argument("--token", action="append", default=[], help='a token, e.g. " Haus"')
    hp.add_argument("--tokens-json", help="a JSON file holding a list of token strings")
    hp.add_argument("--out", required=True, help="output .safetensors file (must not exist)")
    hp.set_defaults(func=cmd_hypernet_predict)

    sub.add_parser("methods", help="list transplant methods").set_defaults(func=cmd_methods)

    def service_options(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--data-dir", help="SQLite file, artifacts and uploads (default "
                        "./tokengraft-data, or $TOKENGRAFT_DATA_DIR)")  # fmt: skip
        sp.add_argument("--database-url", help="e.g. postgresql+psycopg://user@host/db "
                        "(default: SQLite in the data dir)")  # fmt: skip

    sv = sub.add_parser("serve", help="the HTTP service, with an in-process worker")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--corpora-dir", help="folder of NAME.txt eval texts requests may name")
    sv.add_argument("--no-worker", action="store_true", help="API only; run `tokengraft worker`")
    service_options(sv)
    sv.set_defaults(func=cmd_serve)
    w = sub.add_parser("worker", help="run transplant jobs from the database")
    w.add_argument("--corpora-dir", help="folder of NAME.txt eval texts requests may name")
    service_options(w)
    w.set_defaults(func=cmd_worker)
    mg = sub.add_parser("migrate", help="bring the database to the current schema")
    service_options(mg)
    mg.set_defaults(func=cmd_migrate)
    k = sub.add_parser("keys", help="API keys").add_subparsers(dest="keys_command", required=True)
    kc = k.add_parser("create", help="create a key; prints it once")
    kc.add_argument("name", help="who or what uses it")
    kc.add_argument("--scope", choices=["write", "read"], default="write",
                    help="read: GET and HEAD only, for dashboards")  # fmt: skip
    kc.set_defaults(func=cmd_keys_create)
    kl = k.add_parser("list", help="list keys (never their secrets)")
    kl.set_defaults(func=cmd_keys_list)
    kr = k.add_parser("revoke", help="revoke a key by id")
    kr.add_argument("id")
    kr.set_defaults(func=cmd_keys_revoke)
    for sp in (kc, kl, kr):
        service_options(sp)
    sub.add_parser("openapi", help="print the HTTP API's OpenAPI schema (YAML)").set_defaults(
        func=cmd_openapi
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # our own bars and messages say what matters
    hf_logging.disable_progress_bar()
    func: Callable[[argparse.Namespace], int] = args.func
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


if __name__ == "__main__":
    sys.exit(main())
