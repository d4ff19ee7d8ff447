"""The transplant report: what ran, on what, and what quality it kept.

Written as `transplant_report.json` beside the weights, with the model card rendered from it.
A refined checkpoint's report is an older one with a refine section added, so reading one
accepts any report that has the required fields.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

from . import card
from .errors import InputError
from .vocab import Vocab

if TYPE_CHECKING:
    from .align import Setup
    from .predict import Choice
    from .refine import Refined
    from .transplant import TransplantRequest

FILE = "transplant_report.json"


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


def build(
    request: TransplantRequest,
    setup: Setup,
    choice: Choice,
    fallbacks: int,
    refined: Refined | None,
    scores: dict[str, dict],
    timings: dict[str, float],
) -> Report:
    """The report of a finished transplant; `scores` holds "eval" and, when refined,
    "zero_shot" (see `evaluate.compare` and `evaluate.zero_shot`)."""
    vocab = setup.alignment.summary(len(setup.new_vocab))
    vocab["mean_fallback"] = fallbacks
    report = Report(
        method=choice.method,
        options=asdict(setup.inputs.options),
        base_model=request.name("model"),
        tokenizer=request.name("tokenizer"),
        tied=setup.ckpt.tied,
        base_tokenizer=tokenizer_summary(setup.base_vocab),
        new_tokenizer=tokenizer_summary(setup.new_vocab),
        vocab=vocab,
        timings=timings,
        hypernet=choice.hypernet_name,
        method_choice=choice.why,
        donor=request.name("donor") if request.donor is not None else None,
    )
    if "eval" in scores:
        report.eval = {"text": request.name("eval_text"), **scores["eval"]}
    if refined is not None:
        names = request.names.get("refine_texts") or [Path(t).name for t in request.refine_texts]
        report.refine = {"texts": names, **refined.result.to_dict()}
        if "zero_shot" in scores:
            report.refine["eval"] = scores["zero_shot"]
    return report


def tokenizer_summary(vocab: Vocab) -> dict:
    return {
        "family": vocab.family,
        "size": len(vocab),
        "specials": {vocab.tokens[i]: r for i, r in sorted(vocab.special_roles.items())},
        "normalization": vocab.notes(),
    }


def save(folder: Path, data: dict) -> None:
    """The report, and the model card where the report is complete enough to render one."""
    (folder / FILE).write_text(json.dumps(data, indent=2) + "\n")
    names = {f.name for f in fields(Report)}
    if _required(Report) <= set(data) <= names:
        (folder / "README.md").write_text(card.render(data))


def read(folder: Path) -> dict:
    """A checkpoint's report, or {} where it has none."""
    file = folder / FILE
    try:
        return json.loads(file.read_text()) if file.is_file() else {}
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{file} is unreadable: {e}") from None


def _required(cls: type) -> set[str]:
    """A dataclass's fields without a default: what an older report has too."""
    return {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
