"""Artifact storage: a folder per job, written by the worker into an attempt folder that only
appears when complete, and read back by the API in byte ranges.

`Storage` is the interface; `LocalStorage` keeps files on a (possibly shared) filesystem. An
object store would implement the same four methods; `scratch` (a training job's checkpoints,
kept across attempts) needs a filesystem every worker shares.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


class Storage(Protocol):
    def workspace(self, job_id: str, attempt: int) -> Path:
        """Where this attempt writes its checkpoint (must not exist yet); earlier attempts'
        leftovers, complete or not, are removed first."""

    def scratch(self, job_id: str, name: str) -> Path:
        """A folder of the job's that outlives its attempts (created if absent), so that the
        next attempt can resume from what a dead worker checkpointed there."""

    def manifest(self, job_id: str, output_dir: str) -> list[tuple[str, int, str]]:
        """(relative path, size, sha256) of every file of a finished output."""

    def read(
        self, job_id: str, output_dir: str, path: str, start: int, end: int
    ) -> Iterator[bytes]:
        """Bytes [start, end) of one file."""

    def remove(self, job_id: str, output_dir: str | None = None) -> None:
        """One output (or, without `output_dir`, everything the job has)."""


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _job(self, job_id: str) -> Path:
        if not job_id.isalnum():
            raise ValueError(f"bad job id {job_id!r}")
        return self.root / job_id

    def _output(self, job_id: str, output_dir: str) -> Path:
        if not output_dir.replace("-", "").isalnum():
            raise ValueError(f"bad output folder {output_dir!r}")
        return self._job(job_id) / output_dir

    def workspace(self, job_id: str, attempt: int) -> Path:
        folder = self._job(job_id)
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        return folder / f"attempt-{attempt}"

    def scratch(self, job_id: str, name: str) -> Path:
        folder = self._output(job_id, name)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def manifest(self, job_id: str, output_dir: str) -> list[tuple[str, int, str]]:
        out = self._output(job_id, output_dir)
        files = sorted(p for p in out.rglob("*") if p.is_file())
        return [(p.relative_to(out).as_posix(), p.stat().st_size, sha256_file(p)) for p in files]

    def file(self, job_id: str, output_dir: str, path: str) -> Path:
        out = self._output(job_id, output_dir).resolve()
        target = (out / path).resolve()
        if not target.is_relative_to(out) or not target.is_file():
            raise FileNotFoundError(path)
        return target

    def read(
        self, job_id: str, output_dir: str, path: str, start: int, end: int
    ) -> Iterator[bytes]:
        with open(self.file(job_id, output_dir, path), "rb") as f:
            f.seek(start)
            left = end - start
            while left > 0 and (chunk := f.read(min(CHUNK, left))):
                left -= len(chunk)
                yield chunk

    def remove(self, job_id: str, output_dir: str | None = None) -> None:
        target = self._job(job_id) if output_dir is None else self._output(job_id, output_dir)
        shutil.rmtree(target, ignore_errors=True)
