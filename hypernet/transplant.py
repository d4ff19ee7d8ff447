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
from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor

from . import evaluate as ev
from . import report as rp
from .align import Setup
from .errors import Cancelled
from .files import atomic_folder
from .predict import choose_method, predict
from .refine import RefineConfig, Refined, Tick, refine_rows
from .resolve import resolve, resolve_refine
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
    with stages.stage("resolve"):
        inputs = resolve(request)
    with stages.stage("align"):
        setup = Setup.of(inputs, request.embedder)
    with stages.stage("predict"):
        choice = choose_method(request, setup)
        setup.hypernet = choice.hypernet
        matrices, fallbacks = predict(setup, choice.spec, inputs.options, stages.report)
    refined = None
    if request.refine is not None:
        with stages.stage("refine"):
            refined = _refine(setup, matrices, request.refine, stages)
            zero_shot, matrices = matrices, refined.refiner.matrices()
    scores: dict[str, dict] = {}
    with atomic_folder(Path(request.out)) as tmp:
        with stages.stage("write") as tick:
            write_checkpoint(tmp, setup, matrices, tick)
        if inputs.eval_text is not None:
            with stages.stage("evaluate") as tick:
                scores["eval"] = ev.compare(setup, tmp, tick)
            if refined is not None:
                with stages.stage("evaluate_zero_shot") as tick:
                    model = refined.model_with(zero_shot)
                    scores["zero_shot"] = ev.zero_shot(model, setup, scores["eval"], tick)
        if stages.cancelled():
            raise Cancelled("cancelled before the checkpoint was kept")
        report = rp.build(request, setup, choice, fallbacks, refined, scores, stages.timings)
        rp.save(tmp, report.to_dict())
    return report


def _refine(
    setup: Setup, matrices: dict[str, Tensor], config: RefineConfig, stages: _Stages
) -> Refined:
    def tick(t: Tick) -> None:
        stages.report("refine", t.fraction, {"step": t.step, "loss": round(t.loss, 4)})

    return refine_rows(setup, matrices, config, tick, stages.cancelled)


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
    with stages.stage("resolve"):
        inputs, student = resolve_refine(request)
    with stages.stage("align"):
        setup = Setup.of(inputs)
        start = {"input": student.read(student.input_name)}
        if student.output_name is not None:
            start["output"] = student.read(student.output_name)
    with stages.stage("refine"):
        refined = _refine(setup, start, request.config, stages)
    data = rp.read(student.path)
    data["refine"] = {"texts": [Path(t).name for t in request.texts], **refined.result.to_dict()}
    with atomic_folder(Path(request.out)) as tmp:
        with stages.stage("write") as tick:
            rewrite_checkpoint(student, tmp, refined.refiner.matrices(), tick)
        if request.eval_text is not None:
            with stages.stage("evaluate") as tick:
                data["eval"] = {"text": request.eval_text.name, **ev.compare(setup, tmp, tick)}
            with stages.stage("evaluate_zero_shot") as tick:
                model = refined.model_with(start)
                data["refine"]["eval"] = ev.zero_shot(model, setup, data["eval"], tick)
        data.setdefault("timings", {}).update({f"refine:{k}": t for k, t in stages.timings.items()})
        rp.save(tmp, data)
    return data
