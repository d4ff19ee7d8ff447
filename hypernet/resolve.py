"""Resolve: every name a request gives becomes what the later stages read.

The cheap checks come first (the method and what it needs, the options, the texts), so a
mistake costs no model conversion. Then the model and tokenizer names become local folders
(`sources`), the base checkpoint is indexed (headers only), and both tokenizers and the donor
are loaded. Nothing after this stage opens a file the request named.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from transformers import PreTrainedTokenizerFast

from .errors import InputError
from .files import require_absent
from .io import Checkpoint, open_checkpoint
from .methods import Donor, MethodOptions, get_method
from .network.store import resolve_hypernet
from .refine import RefineConfig, check_teacher
from .sources import load_tokenizer, resolve_model, resolve_tokenizer
from .texts import read_eval_text, read_texts, require_window
from .vocab import load_vocab

if TYPE_CHECKING:
    from .transplant import RefineRequest, TransplantRequest


@dataclass
class Inputs:
    """The base model (indexed, not read), both tokenizers, and what else the request named."""

    model_dir: Path
    ckpt: Checkpoint
    base_tok: PreTrainedTokenizerFast
    new_tok: PreTrainedTokenizerFast
    donor: Donor | None = None
    options: MethodOptions = field(default_factory=MethodOptions)
    eval_text: str | None = None
    refine_texts: list[str] = field(default_factory=list)

    @classmethod
    def open(
        cls, model_dir: Path, new_tok: PreTrainedTokenizerFast, donor: Donor | None = None
    ) -> Inputs:
        """A resolved model folder and a loaded tokenizer (benchmarks hold both already)."""
        return cls(model_dir, open_checkpoint(model_dir), load_tokenizer(model_dir), new_tok, donor)


def resolve(request: TransplantRequest) -> Inputs:
    """The request checked, then its model, tokenizer and donor found and opened."""
    require_absent(request.out)
    _check_method(request)
    options = MethodOptions.from_dict(request.options)
    eval_text = _eval_text(request)
    refine_texts = (
        [] if request.refine is None else _refine_texts(request.refine, request.refine_texts)
    )
    model_dir = resolve_model(request.model)
    donor = load_donor(request.donor) if request.donor is not None else None
    new_tok = load_tokenizer(resolve_tokenizer(request.tokenizer))
    inputs = Inputs.open(model_dir, new_tok, donor)
    inputs.options, inputs.eval_text, inputs.refine_texts = options, eval_text, refine_texts
    return inputs


def _check_method(request: TransplantRequest) -> None:
    if request.method is not None:
        spec = get_method(request.method)
        spec.check(hypernet=request.hypernet is not None, donor=request.donor is not None)
    if request.hypernet is not None:
        resolve_hypernet(request.hypernet)


def _eval_text(request: TransplantRequest) -> str | None:
    if request.eval_text is None:
        return None
    text = read_eval_text(Path(request.eval_text), request.eval_bytes)
    if not text:
        raise InputError(f"eval text {request.eval_text} is empty")
    return text


def _refine_texts(config: RefineConfig, paths: list[Path]) -> list[str]:
    """The budget checked, then the texts read, long enough for one training window."""
    config.check()
    texts = read_texts(paths)
    require_window(texts, config.window_chars)
    return texts


def resolve_refine(request: RefineRequest) -> tuple[Inputs, Checkpoint]:
    """A refine request checked, then the teacher (the base model) opened as the inputs'
    model with the student's tokenizer; returns them and the student's checkpoint."""
    texts = _refine_texts(request.config, request.texts)
    text = None
    if request.eval_text is not None:
        text = read_eval_text(request.eval_text, request.eval_bytes)
    require_absent(request.out)
    student_dir, teacher_dir = resolve_model(request.model), resolve_model(request.teacher)
    student = open_checkpoint(student_dir)
    check_teacher(student, open_checkpoint(teacher_dir))
    inputs = Inputs.open(teacher_dir, load_tokenizer(student_dir))
    inputs.eval_text, inputs.refine_texts = text, texts
    return inputs, student


def load_donor(name: str) -> Donor:
    """A model that already speaks the new tokenizer, for OMP: its vocabulary and input rows."""
    folder = resolve_model(name)
    ckpt = open_checkpoint(folder)
    return Donor(load_vocab(load_tokenizer(folder)), ckpt.read(ckpt.input_name))
