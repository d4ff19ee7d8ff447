"""Orchestration: base model + new tokenizer -> a checkpoint that speaks the new tokenizer.

The stages run in this order, each in the module named after it: resolve -> align -> predict
-> [refine] -> write -> evaluate, then the report and its model card. Callers (the CLI, the
service's worker) pass a progress callback and a cancel check; the cancel check is consulted
between stages and at every progress tick, and the output folder only appears once
everything is done.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from torch import Tensor

from . import evaluate as ev
from . import report as rp
from .align import Setup
from .errors import Cancelled
from .files import atomic_folder, require_absent
from .io import open_checkpoint
from .methods import get_method
from .predict import Choice, choose_method, predict
from .refine import RefineConfig, Refined, Tick, check_teacher, refine_rows
from .resolve import Inputs, resolve
from .sources import load_tokenizer, resolve_model
from .texts import read_eval_text, read_texts, require_window
from .write import rewrite_checkpoint, write_checkpoint

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


def transplant(
    request: TransplantRequest,
    progress: Progress | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> rp.Report:
    """Run a whole transplant; returns the report also written into the checkpoint."""
    stages = _Stages(progress, cancelled)
    require_absent(request.out)
    with stages.stage("resolve"):
        inputs = resolve(request)
    with stages.stage("align"):
        setup = Setup.of(inputs, request.embedder)
    with stages.stage("predict"):
        choice = choose_method(request, setup)
        setup.hypernet = choice.hypernet
        matrices, fallbacks = predict(setup, get_method(choice.method), inputs.options,
                                      stages.report)  # fmt: skip
    report = _report(request, setup, choice, fallbacks)
    refined = None
    if request.refine is not None:
        with stages.stage("refine"):
            refined = _refine(setup, matrices, inputs.refine_texts, request.refine, stages)
            zero_shot, matrices = matrices, refined.refiner.matrices()
            report.refine = {"texts": _refine_names(request), **refined.result.to_dict()}
    with atomic_folder(Path(request.out)) as tmp:
        with stages.stage("write") as tick:
            write_checkpoint(tmp, setup, matrices, tick)
        if inputs.eval_text is not None:
            with stages.stage("evaluate") as tick:
                scores = ev.compare(inputs.model_dir, tmp, inputs.eval_text, setup.new_tok,
                                    setup.alignment, tick)  # fmt: skip
                report.eval = {"text": request.name("eval_text"), **scores}
            if refined is not None and report.refine is not None:
                with stages.stage("evaluate_zero_shot") as tick:
                    report.refine["eval"] = ev.zero_shot(
                        refined.model_with(zero_shot), setup.new_tok, inputs.eval_text,
                        report.eval, tick,
                    )  # fmt: skip
        if stages.cancelled():
            raise Cancelled("cancelled before the checkpoint was kept")
        report.timings = stages.timings
        rp.save(tmp, report.to_dict())
    return report


def _report(request: TransplantRequest, setup: Setup, choice: Choice, fallbacks: int) -> rp.Report:
    """What the report says before refining and evaluation add their sections."""
    vocab = setup.alignment.summary(len(setup.new_vocab))
    vocab["mean_fallback"] = fallbacks
    return rp.Report(
        method=choice.method,
        options=asdict(setup.inputs.options),
        base_model=request.name("model"),
        tokenizer=request.name("tokenizer"),
        tied=setup.ckpt.tied,
        base_tokenizer=rp.tokenizer_summary(setup.base_vocab),
        new_tokenizer=rp.tokenizer_summary(setup.new_vocab),
        vocab=vocab,
        hypernet=choice.hypernet_name,
        method_choice=choice.why,
        donor=request.name("donor") if request.donor is not None else None,
    )


def _refine_names(request: TransplantRequest) -> list[str]:
    return request.names.get("refine_texts") or [Path(t).name for t in request.refine_texts]


def _refine(
    setup: Setup, matrices: dict[str, Tensor], texts: list[str], config: RefineConfig,
    stages: _Stages,
) -> Refined:  # fmt: skip
    def tick(t: Tick) -> None:
        stages.report("refine", t.fraction, {"step": t.step, "loss": round(t.loss, 4)})

    return refine_rows(setup, matrices, texts, config, tick, stages.cancelled)


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
    require_window(texts, request.config.window_chars)
    text = None
    if request.eval_text is not None:
        text = read_eval_text(request.eval_text, request.eval_bytes)
    require_absent(request.out)
    with stages.stage("resolve"):
        student_dir, teacher_dir = resolve_model(request.model), resolve_model(request.teacher)
        student = open_checkpoint(student_dir)
        check_teacher(student, open_checkpoint(teacher_dir))
        inputs = Inputs.open(teacher_dir, load_tokenizer(student_dir))
    with stages.stage("align"):
        setup = Setup.of(inputs)
        start = {"input": student.read(student.input_name)}
        if student.output_name is not None:
            start["output"] = student.read(student.output_name)
    with stages.stage("refine"):
        refined = _refine(setup, start, texts, request.config, stages)
    data = rp.read(student_dir)
    data["refine"] = {"texts": [Path(t).name for t in request.texts], **refined.result.to_dict()}
    with atomic_folder(Path(request.out)) as tmp:
        with stages.stage("write") as tick:
            rewrite_checkpoint(student, tmp, refined.refiner.matrices(), tick)
        if text is not None:
            with stages.stage("evaluate") as tick:
                scores = ev.compare(teacher_dir, tmp, text, setup.new_tok, setup.alignment, tick)
                data["eval"] = {"text": request.eval_text.name, **scores}
            with stages.stage("evaluate_zero_shot") as tick:
                data["refine"]["eval"] = ev.zero_shot(
                    refined.model_with(start), setup.new_tok, text, data["eval"], tick
                )
        data.setdefault("timings", {}).update({f"refine:{k}": t for k, t in stages.timings.items()})
        rp.save(tmp, data)
    return data
