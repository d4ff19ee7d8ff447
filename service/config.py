"""Service settings, read from the environment (`TOKENGRAFT_*`) or given by the CLI."""

from __future__ import annotations

from pathlib import Path

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
    stale_seconds: float = 60.0  # no heartbeat for this long: the job is requeued
    max_attempts: int = 3  # transient failures and lost workers are retried up to this
    poll_seconds: float = 1.0  # idle workers look for jobs this often; SSE polls the events
    keepalive_seconds: float = 15.0  # SSE comment lines so proxies keep the stream open
    idempotency_hours: float = 24.0  # an Idempotency-Key is remembered this long
    max_upload_bytes: int = 64 * 2**20  # a tokenizer.json of a 256k vocabulary is ~20 MB
    max_vocab_size: int = 512_000
    max_text_bytes: int = 16 * 2**20

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
