"""The HTTP API's request and response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

OptionValue = bool | int | float | str


class RefineIn(BaseModel):
    """Distillation from the base model into the rows the transplant predicted."""

    model_config = ConfigDict(extra="forbid")

    texts: list[str] = Field(
        min_length=1, max_length=16,
        description="unlabeled text to refine on: corpus names or uploaded text ids",
    )  # fmt: skip
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

    model: str = Field(description="a store name, a bundled model (smollm2-135m) or a hub id")
    tokenizer: str = Field(description="an uploaded tokenizer id, a store name or a hub id")
    method: str = Field("hybrid", description="a transplant method, see GET /methods")
    options: dict[str, OptionValue] = Field(default_factory=dict, description="method options")
    eval_text: str | None = Field(None, description="a corpus name or an uploaded text id")
    eval_bytes: int | None = Field(
        None, ge=1, le=16 * 2**20, description="evaluate on this many bytes"
    )
    hypernet: str | None = Field(None, description="hypernetwork store name (hypernet methods)")
    refine: RefineIn | None = Field(None, description="refine the predicted rows afterwards")
    dry_run: bool = Field(False, description="validate and answer 200 without creating a job")


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
    status: Literal["queued", "running", "succeeded", "failed", "canceled"]
    progress: Progress
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempt: int
    cancel_requested: bool
    error: JobError | None
    request: dict
    result: dict | None = Field(description="{'report': the transplant report} once succeeded")
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


class MethodList(BaseModel):
    methods: list[MethodOut]


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
