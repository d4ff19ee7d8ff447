"""The HTTP API's request and response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from hypernet.network.config import MAX_HELDOUT_CHARS, MAX_SEQ_LEN

from .catalog import NAME
from .models import JobStatus

# Every string a request carries is bounded: requests are stored, listed and written into
# reports, so an unbounded field would be paid for on every page of /jobs.
Name = Annotated[str, StringConstraints(min_length=1, max_length=256)]
OptionName = Annotated[str, StringConstraints(min_length=1, max_length=64)]
OptionValue = bool | int | float | Annotated[str, StringConstraints(max_length=256)]


class RefineIn(BaseModel):
    """Distillation from the base model into the rows the transplant predicted."""

    model_config = ConfigDict(extra="forbid")

    texts: list[Name] = Field(
        min_length=1,
        max_length=16,
        description="unlabeled text to refine on: corpus names or uploaded text ids",
    )
    minutes: float | None = Field(
        None, gt=0, le=240, description="wall-clock budget (10 when neither it nor steps is set)"
    )
    steps: int | None = Field(
        None, ge=1, le=100_000, description="or a number of steps; whichever ends first"
    )
    rows: Literal["new", "all"] = Field(
        "new", description="'new': only the rows the transplant predicted; 'all': every row"
    )


class TransplantIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Name = Field(description="a store name, a bundled model (smollm2-135m) or a hub id")
    tokenizer: Name = Field(description="an uploaded tokenizer id, a store name or a hub id")
    method: OptionName | None = Field(
        None,
        description="a transplant method, see GET /methods; default hypernet+hybrid when a "
        "hypernetwork was trained for the model, else hybrid",
    )
    options: dict[OptionName, OptionValue] = Field(
        default_factory=dict, max_length=32, description="method options"
    )
    eval_text: Name | None = Field(None, description="a corpus name or an uploaded text id")
    eval_bytes: int | None = Field(
        None, ge=1, le=16 * 2**20, description="evaluate on this many bytes"
    )
    hypernet: Name | None = Field(None, description="hypernetwork store name (hypernet methods)")
    donor: Name | None = Field(
        None,
        description="method omp: a model that already speaks the new tokenizer (a store "
        "name, a bundled model or a hub id)",
    )
    refine: RefineIn | None = Field(None, description="refine the predicted rows afterwards")
    dry_run: bool = Field(False, description="validate and answer 200 without creating a job")


class HypernetTrainIn(BaseModel):
    """Train a hypernetwork for a model; the options left out keep the library's defaults
    (`hypernet.network.training.TrainConfig`, `hypernet.network.model.HyperConfig`)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME.pattern, description="store name of the trained network")
    model: Name = Field(description="the base model: a store name, bundled model or hub id")
    texts: list[Name] = Field(
        min_length=1,
        max_length=64,
        description="training text: corpus names or uploaded text ids; the end of each "
        "(heldout_chars) is held out and evaluated on",
    )
    minutes: float | None = Field(
        None, gt=0, le=1440, description="wall-clock budget; the schedule ends with it"
    )
    steps: int | None = Field(
        None, ge=1, le=1_000_000, description="or a number of steps; whichever ends first"
    )
    lr: float | None = Field(None, gt=0, le=1)
    batch: int | None = Field(None, ge=1, le=512, description="sequences per step")
    seq_len: int | None = Field(None, ge=4, le=MAX_SEQ_LEN, description="tokens per sequence")
    lm_weight: float | None = Field(None, ge=0, le=100, description="the LM loss; 0: off")
    aux_weight: float | None = Field(None, ge=0, le=100, description="pull to copied rows")
    rec_weight: float | None = Field(None, ge=0, le=100, description="re-spelled base tokens")
    eval_every: int | None = Field(None, ge=1, le=1_000_000, description="held-out evaluation")
    checkpoint_every: int | None = Field(
        None, ge=1, le=1_000_000, description="steps between checkpoints (resume points)"
    )
    vocab_min: int | None = Field(None, ge=100, le=1_000_000, description="sampled vocabularies")
    vocab_max: int | None = Field(None, ge=100, le=1_000_000)
    heldout_chars: int | None = Field(
        None, ge=1, le=MAX_HELDOUT_CHARS, description="the end of each text, never trained on"
    )
    width: int | None = Field(None, ge=8, le=4096, description="the network's width")
    layers: int | None = Field(None, ge=1, le=24)
    heads: int | None = Field(None, ge=1, le=64)
    max_pieces: int | None = Field(None, ge=1, le=64, description="longer spellings are cut")
    copied_rows: bool | None = Field(None, description="predict copied tokens' rows too")
    corpus_weights: dict[Name, float] | None = Field(
        None, max_length=64, description="text name -> how often it is drawn (default 1)"
    )
    corpus_seq_len: dict[Name, int] | None = Field(
        None, max_length=64, description="text name -> its sequence length (e.g. longer for code)"
    )
    seed: int | None = Field(None, ge=0, le=2**31 - 1)

    @model_validator(mode="after")
    def _budget(self) -> HypernetTrainIn:
        if self.minutes is None and self.steps is None:
            raise ValueError("a budget is needed: minutes, steps or both")
        return self


class Progress(BaseModel):
    stage: str | None
    fraction: float
    message: str | None


class JobError(BaseModel):
    type: str
    detail: str | None


class JobUrls(BaseModel):
    self: str
    events: str
    artifacts: str
    checkpoint: str


class JobOut(BaseModel):
    id: str
    kind: Literal["transplant", "hypernet"]
    status: JobStatus
    progress: Progress
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempt: int
    cancel_requested: bool
    error: JobError | None
    request: dict
    result: dict | None = Field(
        description="once succeeded: {'report': the transplant report} for a transplant, "
        "{'hypernet': its name, steps and held-out scores} for a hypernet job"
    )
    urls: JobUrls


class JobPage(BaseModel):
    jobs: list[JobOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next (older) page")


class DryRunOut(BaseModel):
    valid: bool
    request: TransplantIn


class FileOut(BaseModel):
    path: str
    size: int
    sha256: str


class Manifest(BaseModel):
    files: list[FileOut]


class UploadOut(BaseModel):
    id: str
    kind: Literal["tokenizer", "text"]
    filename: str
    size: int
    sha256: str
    vocab_size: int | None
    created_at: datetime


class UploadList(BaseModel):
    uploads: list[UploadOut]


class NamedEntry(BaseModel):
    name: str
    source: str


class ModelList(BaseModel):
    models: list[NamedEntry]


class TokenizerList(BaseModel):
    store: list[NamedEntry]
    uploads: list[UploadOut]


class TextList(BaseModel):
    corpora: list[str]
    uploads: list[UploadOut]


class HypernetOut(BaseModel):
    name: str
    base_model: str | None
    architecture: str
    rows: int
    steps: int | None
    held_out: dict | None


class HypernetList(BaseModel):
    hypernets: list[HypernetOut]


class MethodOut(BaseModel):
    name: str
    description: str
    needs: list[str] = Field(
        description="what a request must give this method besides a model and a tokenizer: "
        "`hypernet` (a hypernetwork), `donor` (a model that already uses the new tokenizer), "
        "`embedder` (a text-embedding model; the server has one)"
    )


class MethodList(BaseModel):
    methods: list[MethodOut]


class AccessOut(BaseModel):
    keys_required: bool = Field(
        description="false: no key was ever created (the server then listens on loopback only)"
    )
    scope: Literal["write", "read"] = Field(
        description="write: everything; read: GET and HEAD only (watch, download, no changes)"
    )


class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    status: Literal["ready", "not ready"]
    database: bool
    live_workers: int


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[dict] | None = None
