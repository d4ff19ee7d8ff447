"""Orchestration: base model + new tokenizer -> a checkpoint that speaks the new tokenizer.

resolve -> align vocabularies -> predict rows -> [refine] -> write the checkpoint -> evaluate
-> report. Callers (the CLI, the service's worker) pass a progress callback and a cancel check;
the cancel check is consulted between stages and at every progress tick, and the output folder
only appears once everything is done.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import MISSING, asdict, dataclass, field, fields
from functools import cached_property
from pathlib import Path

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerFast

from . import evaluate as ev
from .errors import Cancelled, InputError
from .heuristics.mean import mean
from .io import Checkpoint, atomic_folder, open_checkpoint, require_absent, write_weights
from .methods import Context, Donor, Method, MethodOptions, get_method
from .model import Fingerprint
from .models import cache_root, load_tokenizer, resolve_model, resolve_tokenizer
from .predict import Predictor, architecture, find_hypernet, resolve_hypernet
from .refine import (
    RefineConfig,
    Refiner,
    RefineResult,
    Tick,
    check_teacher,
    load_frozen,
    read_texts,
    require_window,
    trainable_rows,
    with_rows,
)  # fmt: skip
from .vocab import Alignment, Decomposer, Vocab, align, load_vocab

# Called as (stage, fraction), or (stage, fraction, detail) where a stage has more to say
# (refine: its step and loss).
Progress = Callable[..., None]


@dataclass
class TransplantRequest:
    model: str  # folder, hub id, or a bundled name such as smollm2-135m
    tokenizer: str  # folder, tokenizer.json file, or hub id
    out: Path
    method: str | None = None  # None: hypernet+hybrid when a hypernetwork fits, else hybrid
    options: dict = field(default_factory=dict)
    donor: str | None = None  # a model that already speaks the new tokenizer (for omp)
    eval_text: Path | None = None
    eval_bytes: int | None = None  # evaluate on at most this many bytes of eval_text
    embedder: Path | None = None  # text-embedding model for the global heuristic
    hypernet: str | None = None  # a hypernetwork folder or store name (hypernet methods)
    hypernets: list[Path] | None = None  # where a fitting one is looked for (None: the defaults)
    refine: RefineConfig | None = None  # distil from the base model after predicting rows
    refine_texts: list[Path] = field(default_factory=list)  # unlabeled text to refine on
    # How the report names the inputs when they differ from the strings above: a service
    # resolves names to its own paths, which its users should not see.
    names: dict = field(default_factory=dict)  # key -> name; "refine_texts" -> list of names

    def name(self, key: str) -> str:
        return str(self.names.get(key) or getattr(self, key))


@dataclass
class Report:
    method: str
    options: dict
    base_model: str
    tokenizer: str
    tied: bool
    base_tokenizer: dict
    new_tokenizer: dict
    vocab: dict
    timings: dict[str, float] = field(default_factory=dict)
    eval: dict | None = None
    hypernet: str | None = None
    refine: dict | None = None
    method_choice: str = ""  # why this method ran
    donor: str | None = None  # omp: the model that already spoke the new tokenizer

    def to_dict(self) -> dict:
        return asdict(self)


class _Stages:
    """Times each stage, reports progress, and honours cancellation between stages and at
    every progress tick, so a cancelled job does not sit through a long evaluation."""

    def __init__(self, progress: Progress | None, cancelled: Callable[[], bool] | None) -> None:
        self.progress = progress or (lambda stage, fraction: None)
        self.cancelled = cancelled or (lambda: False)
        self.timings: dict[str, float] = {}

    def report(self, stage: str, fraction: float, detail: dict | None = None) -> None:
        if self.cancelled():
            raise Cancelled(f"cancelled during {stage}")
        if detail is None:
            self.progress(stage, fraction)
        else:
            self.progress(stage, fraction, detail)

    @contextmanager
    def stage(self, name: str) -> Iterator[Callable[[float], None]]:
        if self.cancelled():
            raise Cancelled(f"cancelled before {name}")
        start = time.perf_counter()
        self.progress(name, 0.0)
        yield lambda fraction: self.report(name, fraction)
        self.timings[name] = round(time.perf_counter() - start, 3)
        self.progress(name, 1.0)


def _tokenizer_summary(vocab: Vocab) -> dict:
    return {
        "family": vocab.family,
        "size": len(vocab),
        "specials": {vocab.tokens[i]: r for i, r in sorted(vocab.special_roles.items())},
        "normalization": vocab.notes(),
    }


def assemble(
    base: Tensor, alignment: Alignment, rows: Tensor, keep: Tensor, special_ids: list[int]
) -> int:
    """Fill `rows` in place into the new matrix (a 262k-row matrix is held once): rows where
    `keep` is set stay as predicted; other copies and specials take their base row, unmatched
    specials and placeholders the mean of the base special rows, and predicted tokens
    without a prediction the mean of all base rows. Returns how many fell back to a mean
    (placeholders not counted)."""
    n_new, d = rows.shape
    assert base.ndim == 2 and base.shape[1] == d and keep.shape == (n_new,)
    todo = torch.zeros(n_new, dtype=torch.bool)
    todo[alignment.predict] = True
    rows[todo & ~keep] = mean(base, 1).to(rows.dtype)
    pairs = {i: j for i, j in {**alignment.copies, **alignment.specials}.items() if not keep[i]}
    rows[list(pairs)] = base[list(pairs.values())].to(rows.dtype)
    # Placeholders and specials without a counterpart: rows like the base model's special
    # tokens, which it has learnt to predict only where they belong.
    by_role = alignment.unmatched_specials + alignment.unused
    if by_role:
        pool = base[special_ids] if special_ids else base
        rows[by_role] = mean(pool, 1).to(rows.dtype)
    return int((todo & ~keep).sum()) + len(alignment.unmatched_specials)


def _chat_template(
    base_tok: PreTrainedTokenizerFast,
    new_tok: PreTrainedTokenizerFast,
    base: Vocab,
    new: Vocab,
    alignment: Alignment,
) -> str | None:
    """The new tokenizer's template, or the base one with each special token's spelling
    replaced by the new token that took its role."""
    if new_tok.chat_template:
        return new_tok.chat_template
    template = base_tok.chat_template
    if not template or not isinstance(template, str):
        return None

    def rank(i: int, j: int) -> int:  # same role first; pad only when nothing else took it
        role = new.special_roles.get(i)
        return 0 if role == base.special_roles.get(j) else 2 if role == "pad" else 1

    takers: dict[int, int] = {}
    for i, j in sorted(alignment.specials.items()):
        if j not in takers or rank(i, j) < rank(takers[j], j):
            takers[j] = i
    new_vocab = new_tok.get_vocab()
    for j, i in takers.items():
        if base.tokens[j] not in new_vocab:
            template = template.replace(base.tokens[j], new.tokens[i])
    return template


def _first_id(tok: PreTrainedTokenizerFast, *attributes: str) -> int | None:
    for attr in attributes:
        value = getattr(tok, attr, None)
        if value is not None:
            return int(value)
    return None


def _write_configs(ckpt: Checkpoint, tok: PreTrainedTokenizerFast, out: Path, tied: bool) -> None:
    config = dict(ckpt.config)
    config["vocab_size"] = len(tok)
    config["tie_word_embeddings"] = tied
    # A BERT-style vocabulary opens with [CLS] and closes with [SEP]: they stand in for bos/eos.
    ids = {
        "bos_token_id": _first_id(tok, "bos_token_id", "cls_token_id"),
        "eos_token_id": _first_id(tok, "eos_token_id", "sep_token_id"),
        "pad_token_id": tok.pad_token_id,
    }
    config.update(ids)
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    generation_file = ckpt.path / "generation_config.json"
    generation = json.loads(generation_file.read_text()) if generation_file.is_file() else {}
    generation.update(ids)  # the base model's ids mean other tokens now, even where None
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")


def eval_shares(tok: PreTrainedTokenizerFast, text: str, alignment: Alignment) -> dict:
    """Of the eval text's tokens under the new tokenizer: how many have copied vs predicted rows."""
    ids = tok(text, add_special_tokens=False)["input_ids"]
    copied = set(alignment.copies) | set(alignment.specials)
    n_copied = sum(1 for i in ids if i in copied)
    return {
        "tokens": len(ids),
        "copied_share": round(n_copied / max(1, len(ids)), 4),
        "predicted_share": round(1 - n_copied / max(1, len(ids)), 4),
    }


def _baseline_eval(model_dir: Path, text: str, progress: Callable[[float], None]) -> dict:
    """The base model's own score on `text`; cached, since every transplant compares with it."""
    key = hashlib.sha256()
    for name in ("config.json", "tokenizer.json"):
        file = model_dir / name
        key.update(file.read_bytes() if file.is_file() else b"")
    for file in sorted(model_dir.glob("*.safetensors")):
        key.update(f"{file.name}:{file.stat().st_size}:{file.stat().st_mtime_ns}".encode())
    key.update(text.encode())
    cache = cache_root() / "evals" / f"{key.hexdigest()[:32]}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    result = ev.evaluate_folder(model_dir, text, progress=progress).to_dict()
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(result))
    return result


def load_donor(name: str) -> Donor:
    """A model that already speaks the new tokenizer, for OMP: its vocabulary and input rows."""
    folder = resolve_model(name)
    ckpt = open_checkpoint(folder)
    return Donor(load_vocab(load_tokenizer(folder)), ckpt.read(ckpt.input_name))


@dataclass
class Setup:
    """A base model and a new tokenizer, aligned: everything before a method runs.

    Kept apart from `transplant` so that benchmarks and tuning can try many methods and
    options on one alignment without re-reading the model.
    """

    ckpt: Checkpoint
    base_tok: PreTrainedTokenizerFast
    new_tok: PreTrainedTokenizerFast
    base_vocab: Vocab
    new_vocab: Vocab
    alignment: Alignment
    matrices: dict[str, Tensor]  # "input" and, when untied, "output": usable base rows only
    embedder: Path | None
    donor: Donor | None
    hypernet: str | None = None

    @classmethod
    def load(
        cls,
        model_dir: Path,
        new_tok: PreTrainedTokenizerFast,
        embedder: Path | None = None,
        donor: Donor | None = None,
        hypernet: str | None = None,
    ) -> Setup:
        ckpt = open_checkpoint(model_dir)
        base_tok = load_tokenizer(model_dir)
        base_vocab, new_vocab = load_vocab(base_tok), load_vocab(new_tok)
        matrices = ckpt.embeddings(len(base_vocab))
        # ids beyond the rows have nothing to copy
        alignment = align(base_vocab, new_vocab, matrices["input"].shape[0])
        return cls(
            ckpt, base_tok, new_tok, base_vocab, new_vocab, alignment, matrices, embedder, donor,
            hypernet,
        )  # fmt: skip

    @cached_property
    def fingerprint(self) -> Fingerprint:
        """What a hypernetwork trained for this base model records."""
        return Fingerprint.of(
            architecture(self.ckpt.config), self.matrices["input"], self.ckpt.tied
        )

    @cached_property
    def context(self) -> Context:
        base_rows = self.matrices["input"].shape[0]
        decomposer = Decomposer(self.base_tok, self.base_vocab, base_rows)
        hypernet = self.hypernet

        def predictor() -> Predictor:
            if hypernet is None:
                raise InputError("the hypernet methods need a hypernetwork (--hypernet DIR)")
            arch = architecture(self.ckpt.config)
            return Predictor.on_rows(hypernet, arch, self.matrices, decomposer)

        return Context(
            self.base_vocab, self.new_vocab, self.alignment, decomposer, base_rows,
            MethodOptions(), self.embedder, self.donor, hypernet=predictor,
        )  # fmt: skip

    def predict(
        self, method: Method, options: MethodOptions, progress: Progress | None = None
    ) -> tuple[dict[str, Tensor], int]:
        """New matrices (same keys as `matrices`) and how many rows fell back to a mean."""
        ctx = self.context
        ctx.options = options
        ctx.progress = progress or (lambda stage, fraction: None)
        prediction = method(ctx)
        # A method defines predicted tokens, and copies where it gives rows for them (only
        # the hypernetwork's copied-rows mode does): those rows are kept as it predicted them.
        keep = prediction.defined
        specials = [i for i in self.base_vocab.special_ids() if i < ctx.base_rows]
        out, fallbacks = {}, 0
        for name, matrix in self.matrices.items():
            out[name] = prediction.rows(name, matrix)
            fallbacks = assemble(matrix, self.alignment, out[name], keep, specials)
        return out, fallbacks


@dataclass
class Choice:
    method: str
    hypernet: str | None  # a folder or store name
    hypernet_name: str | None  # as the report names it
    why: str


def choose_method(request: TransplantRequest, setup: Setup) -> Choice:
    """The asked-for method; else hypernet+hybrid with the given hypernetwork or one trained
    for exactly this base model (fingerprint); else hybrid."""
    given = request.name("hypernet") if request.hypernet else None
    if request.method is not None:
        uses = request.method.startswith("hypernet")
        return Choice(request.method, request.hypernet if uses else None, given if uses else None,
                      "asked for")  # fmt: skip
    if request.hypernet is not None:
        return Choice("hypernet+hybrid", request.hypernet, given, "a hypernetwork was given")
    found = find_hypernet(setup.fingerprint, request.hypernets)
    if found is None:
        return Choice("hybrid", None, None, "no hypernetwork was trained for this base model")
    why = f"hypernetwork {found.name!r} was trained for this base model (fingerprint matches)"
    return Choice("hypernet+hybrid", str(found), found.name, why)


def transplant(
    request: TransplantRequest,
    progress: Progress | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> Report:
    """Run a whole transplant; returns the report also written into the checkpoint."""
    stages = _Stages(progress, cancelled)
    options = MethodOptions.from_dict(request.options)
    if request.method is not None:
        get_method(request.method)
        if request.method.startswith("hypernet") and request.hypernet is None:
            raise InputError(f"method {request.method!r} needs a hypernetwork (--hypernet DIR)")
    if request.hypernet is not None:
        resolve_hypernet(request.hypernet)
    text = None
    if request.eval_text is not None:
        text = ev.read_eval_text(Path(request.eval_text), request.eval_bytes)
        if not text:
            raise InputError(f"eval text {request.eval_text} is empty")
    refine_texts = []
    if request.refine is not None:
        request.refine.check()
        refine_texts = read_texts(request.refine_texts)
        require_window(refine_texts, request.refine)
    require_absent(request.out)

    with stages.stage("resolve"):
        model_dir = resolve_model(request.model)
        donor = load_donor(request.donor) if request.donor is not None else None
        new_tok = load_tokenizer(resolve_tokenizer(request.tokenizer))
    with stages.stage("align"):
        setup = Setup.load(model_dir, new_tok, request.embedder, donor)
        choice = choose_method(request, setup)
        setup.hypernet, method = choice.hypernet, get_method(choice.method)
    with stages.stage("predict"):
        new_matrices, fallbacks = setup.predict(method, options, stages.report)
    refined = None
    if request.refine is not None:
        with stages.stage("refine"):
            refined = _refine(setup, new_matrices, refine_texts, request.refine, stages)
            zero_shot, new_matrices = new_matrices, refined.refiner.matrices()

    ckpt, base_tok, alignment = setup.ckpt, setup.base_tok, setup.alignment
    base_vocab, new_vocab = setup.base_vocab, setup.new_vocab
    vocab_report = alignment.summary(len(new_vocab))
    vocab_report["mean_fallback"] = fallbacks
    report = Report(
        method=choice.method,
        options=asdict(options),
        base_model=request.name("model"),
        tokenizer=request.name("tokenizer"),
        tied=ckpt.tied,
        base_tokenizer=_tokenizer_summary(base_vocab),
        new_tokenizer=_tokenizer_summary(new_vocab),
        vocab=vocab_report,
        hypernet=choice.hypernet_name,
        method_choice=choice.why,
        donor=request.name("donor") if request.donor is not None else None,
        refine=None if refined is None else {
            "texts": request.names.get("refine_texts")
            or [Path(t).name for t in request.refine_texts],
            **refined.result.to_dict(),
        },
    )  # fmt: skip
    with atomic_folder(Path(request.out)) as tmp:
        with stages.stage("write") as tick:
            write_weights(ckpt, tmp, _replaced(ckpt, new_matrices), progress=tick)
            _write_configs(ckpt, new_tok, tmp, ckpt.tied)
            new_tok.chat_template = _chat_template(
                base_tok, new_tok, base_vocab, new_vocab, alignment
            )
            new_tok.save_pretrained(tmp)
        if text is not None:
            with stages.stage("evaluate") as tick:
                scores = _evaluate(model_dir, tmp, text, new_tok, alignment, tick)
                report.eval = {"text": request.name("eval_text"), **scores}
            if refined is not None and report.refine is not None:
                with stages.stage("evaluate_zero_shot") as tick:
                    report.refine["eval"] = _refine_eval(
                        refined.refiner, zero_shot, new_tok, text, report.eval, tick
                    )
        if stages.cancelled():
            raise Cancelled("cancelled before the checkpoint was kept")
        report.timings = stages.timings
        (tmp / "transplant_report.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        (tmp / "README.md").write_text(model_card(report))
    return report


def _replaced(ckpt: Checkpoint, matrices: dict[str, Tensor]) -> dict[str, Tensor]:
    """The checkpoint's embedding tensors by name, for `write_weights`."""
    replaced = {ckpt.input_name: matrices["input"]}
    if ckpt.output_name is not None:
        replaced[ckpt.output_name] = matrices["output"]
    return replaced


def _evaluate(
    model_dir: Path, folder: Path, text: str, tok: PreTrainedTokenizerFast, alignment: Alignment,
    tick: Callable[[float], None],
) -> dict:  # fmt: skip
    """The written checkpoint's score next to the base model's own on the same text."""
    before = _baseline_eval(model_dir, text, lambda f: tick(f / 2))
    after = ev.evaluate_folder(folder, text, progress=lambda f: tick(0.5 + f / 2))
    return {
        "bytes": after.bytes,
        "before": before,
        "after": after.to_dict(),
        "ratio": round(after.bits_per_byte / before["bits_per_byte"], 4),
        **eval_shares(tok, text, alignment),
    }


@dataclass
class _Refined:
    refiner: Refiner
    result: RefineResult


def _refine(
    setup: Setup, matrices: dict[str, Tensor], texts: list[str], config: RefineConfig,
    stages: _Stages,
) -> _Refined:  # fmt: skip
    """Distil the base model into the predicted rows; only rows, never the body, change."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = load_frozen(setup.ckpt.path, device)
    mask = trainable_rows(setup.alignment, matrices["input"].shape[0], config.rows)
    refiner = Refiner(model, setup.base_tok, setup.new_tok, matrices, mask, texts, config)

    def tick(t: Tick) -> None:
        stages.report("refine", t.fraction, {"step": t.step, "loss": round(t.loss, 4)})

    return _Refined(refiner, refiner.fit(progress=tick, cancelled=stages.cancelled))


def _refine_eval(
    refiner: Refiner, zero_shot: dict[str, Tensor], tok: PreTrainedTokenizerFast, text: str,
    final: dict, tick: Callable[[float], None],
) -> dict:  # fmt: skip
    """Bits per byte of the zero-shot rows (before refining) next to the refined checkpoint's."""
    before = ev.evaluate(with_rows(refiner.model, zero_shot), tok, text, progress=tick)
    base = final["before"]["bits_per_byte"]
    after = final["after"]["bits_per_byte"]
    return {
        "before": before.bits_per_byte,
        "after": after,
        "ratio_before": round(before.bits_per_byte / base, 4),
        "ratio_after": round(after / base, 4),
    }


@dataclass
class RefineRequest:
    """Refine an existing transplanted checkpoint against the base model it came from."""

    model: str  # the transplanted checkpoint: a folder with its new tokenizer
    teacher: str  # the base model, with its own tokenizer
    texts: list[Path]
    out: Path
    config: RefineConfig = field(default_factory=RefineConfig)
    eval_text: Path | None = None
    eval_bytes: int | None = None


def refine_checkpoint(
    request: RefineRequest,
    progress: Progress | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> dict:
    """`tokengraft refine`: the checkpoint's rows refined, written to a new folder with the
    same files; the report gains a refine section. Returns the report."""
    stages = _Stages(progress, cancelled)
    request.config.check()
    texts = read_texts(request.texts)
    require_window(texts, request.config)
    text = (
        None
        if request.eval_text is None
        else ev.read_eval_text(request.eval_text, request.eval_bytes)
    )
    require_absent(request.out)
    with stages.stage("resolve"):
        student_dir, teacher_dir = resolve_model(request.model), resolve_model(request.teacher)
        student = open_checkpoint(student_dir)
        check_teacher(student, open_checkpoint(teacher_dir))
    with stages.stage("align"):
        setup = Setup.load(teacher_dir, load_tokenizer(student_dir))
        start = {"input": student.read(student.input_name)}
        if student.output_name is not None:
            start["output"] = student.read(student.output_name)
    with stages.stage("refine"):
        refined = _refine(setup, start, texts, request.config, stages)
    data = _report_of(student_dir)
    data["refine"] = {"texts": [Path(t).name for t in request.texts], **refined.result.to_dict()}
    with atomic_folder(Path(request.out)) as tmp:
        with stages.stage("write") as tick:
            rows = _replaced(student, refined.refiner.matrices())
            write_weights(student, tmp, rows, progress=tick)
            for file in student_dir.iterdir():
                if file.is_file() and not file.name.startswith("model"):
                    shutil.copyfile(file, tmp / file.name)
        if text is not None:
            with stages.stage("evaluate") as tick:
                scores = _evaluate(teacher_dir, tmp, text, setup.new_tok, setup.alignment, tick)
                data["eval"] = {"text": request.eval_text.name, **scores}
            with stages.stage("evaluate_zero_shot") as tick:
                data["refine"]["eval"] = _refine_eval(
                    refined.refiner, start, setup.new_tok, text, data["eval"], tick
                )
        data.setdefault("timings", {}).update({f"refine:{k}": t for k, t in stages.timings.items()})
        (tmp / "transplant_report.json").write_text(json.dumps(data, indent=2) + "\n")
        if set(data) >= _required(Report) and set(data) <= {f.name for f in fields(Report)}:
            (tmp / "README.md").write_text(model_card(Report(**data)))
    return data


def _required(cls: type) -> set[str]:
    """A dataclass's fields without a default: what an older report has too."""
    return {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}


def _report_of(folder: Path) -> dict:
    file = folder / "transplant_report.json"
    try:
        return json.loads(file.read_text()) if file.is_file() else {}
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{file} is unreadable: {e}") from None


def _refine_card(r: dict) -> list[str]:
    lines = [
        "## Refinement",
        "",
        f"The predicted rows were then refined against the base model ({r['rows']} rows, "
        f"{r['trained_rows']} trained) on {r['text_bytes']} bytes of unlabeled text "
        f"({', '.join(f'`{t}`' for t in r['texts'])}): {r['steps']} steps in "
        f"{r['minutes']:.1f} minutes. Distillation loss on {r['probe']} windows "
        f"{r['loss_before']:.4f} -> {r['loss_after']:.4f}.",
        "",
    ]
    if "eval" in r:
        e = r["eval"]
        lines += [
            f"Bits per byte on the eval text: {e['before']:.4f} zero-shot "
            f"(x{e['ratio_before']:.3f}) -> {e['after']:.4f} refined (x{e['ratio_after']:.3f}).",
            "",
        ]
    return lines


def model_card(report: Report) -> str:
    """The checkpoint's README.md: where it came from and what quality it kept."""
    v = report.vocab
    lines = [
        "---",
        "library_name: transformers",
        "tags: [tokengraft, tokenizer-transplant]",
        "---",
        "",
        f"# {report.base_model} with a new tokenizer",
        "",
        f"Embeddings for the tokenizer `{report.tokenizer}` were predicted zero-shot with "
        f"tokengraft's `{report.method}` method from `{report.base_model}` "
        f"({report.method_choice}"
        + (f"; hypernetwork `{report.hypernet}`" if report.hypernet else "")
        + (f"; donor `{report.donor}`" if report.donor else "")
        + "). No weights other than the embedding matrices changed.",
        "",
        "## Vocabulary",
        "",
        "| | |",
        "|---|---|",
        f"| base tokenizer | {report.base_tokenizer['family']}, "
        f"{report.base_tokenizer['size']} tokens |",
        f"| new tokenizer | {report.new_tokenizer['family']}, "
        f"{report.new_tokenizer['size']} tokens |",
        f"| copied (same surface form) | {v['copied']} ({v['overlap']:.1%}) |",
        f"| special tokens matched by role | {v['specials_by_role']} |",
        f"| special tokens without a counterpart | {v['specials_unmatched']} |",
        f"| unused placeholders (rows like the special tokens') | {v.get('unused', 0)} |",
        f"| predicted | {v['predicted']} |",
        f"| fell back to the mean row | {v['mean_fallback']} |",
        f"| tied embeddings | {report.tied} |",
        "",
    ]
    notes = report.new_tokenizer["normalization"]
    if notes:
        lines += ["New tokenizer: " + "; ".join(notes) + ".", ""]
    if report.eval:
        e = report.eval
        b, a = e["before"], e["after"]
        lines += [
            "## Quality",
            "",
            f"On {e['bytes']} bytes of `{Path(e['text']).name}` (bits per byte are comparable "
            "across tokenizers; perplexity is not):",
            "",
            "| | bits per byte | tokens per byte |",
            "|---|---|---|",
            f"| base model, its own tokenizer | {b['bits_per_byte']:.4f} | "
            f"{b['tokens_per_byte']:.4f} |",
            f"| this checkpoint | {a['bits_per_byte']:.4f} | {a['tokens_per_byte']:.4f} |",
            "",
            f"After/before: {e['ratio']:.3f}. Of the text's tokens, {e['copied_share']:.1%} have "
            f"copied rows and {e['predicted_share']:.1%} predicted ones.",
            "",
        ]
    if report.refine:
        lines += _refine_card(report.refine)
    lines += [
        "## Method",
        "",
        "```json",
        json.dumps(
            {"method": report.method, "options": report.options, "hypernet": report.hypernet},
            indent=2,
        ),
        "```",
        "",
        "Stage timings (s): " + ", ".join(f"{k} {t:.1f}" for k, t in report.timings.items()) + ".",
        "",
    ]
    return "\n".join(lines)
