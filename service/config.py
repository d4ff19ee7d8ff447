"""Service settings, read from the environment (`TOKENGRAFT_*`) or given by the CLI."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TOKENGRAFT_")

    data_dir: Path = Path("tokengraft-data")  # SQLite file, artifacts, uploads, stores
    database_url: str | None = (
        None  # default: SQLite in data_dir; postgresql+psycopg://... to scale
    )
    corpora_dir: Path | None = None  # eval texts users may name ("de.eval" -> de.eval.txt)
    hypernets_dir: Path | None = None  # default: the library's hypernetwork store
    heartbeat_seconds: float = 5.0  # how often a running worker proves it is alive
    cancel_poll_seconds: float = 0.5  # how often a running job's cancel flag is read
    stale_seconds: float = 60.0  # no heartbeat for this long: the job is requeued
    max_attempts: int = 3  # transient failures and lost workers are retried up to this
    poll_seconds: float = 1.0  # idle workers look for jobs this often; SSE polls the events
    notify: bool = True  # PostgreSQL: idle workers LISTEN and wake when a job is queued
    keepalive_seconds: float = 15.0  # SSE comment lines so proxies keep the stream open
    idempotency_hours: float = 24.0  # an Idempotency-Key is remembered this long
    max_upload_bytes: int = 64 * 2**20  # a tokenizer.json of a 256k vocabulary is ~20 MB
    max_vocab_size: int = 512_000
    max_text_bytes: int = 16 * 2**20
    # a hypernetwork whose weights and AdamW state exceed this is refused (None: host's memory)
    max_train_memory_bytes: int | None = None
    retention_days: float | None = None  # finished jobs older than this are deleted, files too
    max_artifact_bytes: int | None = None  # over this, the oldest succeeded jobs are deleted
    max_request_bytes: int = 2**20  # any other body (a JSON request is a few hundred bytes)
    max_header_bytes: int = 64 * 2**10  # a request's headers; over it, 431 before any key check
    # uploads parsed at once: a tokenizer.json's parse holds several times its size in memory
    upload_parses: int = Field(1, ge=1)
    upload_wait_seconds: float = 60.0  # an upload waits this long for its parse, then 503
    poll_cache_seconds: float = 0.25  # GET /jobs/{id} reads a job at most this often
    key_cache_seconds: float = 1.0  # a new or revoked API key takes effect within this
    manifest_cache_seconds: float = 10.0  # downloads read a succeeded job's files this often
    storage: str | None = None  # artifacts and uploads: file://DIR (default: jobs_dir), s3://B/P
    storage_redirect: bool = False  # artifact downloads answer 307 to a presigned store URL
    s3_part_bytes: int = Field(8 * 2**20, ge=5 * 2**20)  # multipart part size (S3: >= 5 MiB)
    # a store that does not answer puts a job off, not failing it: waits of 5, 10, 20 s ...
    store_retry_seconds: float = Field(5.0, gt=0)  # the first wait
    store_retry_max_seconds: float = Field(120.0, gt=0)  # the waits double up to this
    store_retry_total_seconds: float = 600.0  # once the waits add up to this, the job fails
    min_free_bytes: int = 2**30  # /readyz answers 503 below this free in the data dir or store

    @field_validator("data_dir", "corpora_dir", "hypernets_dir")
    @classmethod
    def _absolute(cls, path: Path | None) -> Path | None:
        """Absolute, so that every server path in a message looks like one (and is redacted)."""
        return path.absolute() if path is not None else None

    @property
    def live_seconds(self) -> float:
        """A worker whose last beat is older than three beats is not counted as live."""
        return 3 * self.heartbeat_seconds

    @property
    def url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir.resolve() / 'tokengraft.db'}"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def models_dir(self) -> Path:
        """Server-side model store: one Hugging Face folder per name."""
        return self.data_dir / "models"

    @property
    def tokenizers_dir(self) -> Path:
        """Server-side tokenizer store: one folder (or name.json) per name."""
        return self.data_dir / "tokenizers"
