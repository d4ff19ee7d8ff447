"""Artifact storage: a folder per job, written by the worker into an attempt folder that only
appears when complete, and read back by the API in byte ranges.

`Storage` is the interface; `LocalStorage` keeps files on a (possibly shared) filesystem. An
object store would implement the same methods; `scratch` (a training job's checkpoints, kept
across attempts) needs a filesystem every worker shares.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

CHUNK = 1 << 20


class Changed(OSError):
    """A recorded file whose size on disk is no longer the one recorded."""


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

    def check(self, job_id: str, output_dir: str, path: str, size: int) -> None:
        """Raise FileNotFoundError unless the file is there as it was written (a regular file
        inside the output, reached through no symlink), or Changed unless it holds `size`
        bytes: a response must not promise a body it cannot send."""

    def read(
        self, job_id: str, output_dir: str, path: str, start: int, end: int
    ) -> Iterator[bytes]:
        """Bytes [start, end) of one file."""

    def remove(self, job_id: str, output_dir: str | None = None) -> None:
        """One output (or, without `output_dir`, everything the job has); the job's folder
        goes with its last output."""


def _is(path: Path, kind: Callable[[int], bool]) -> None:
    """Raise FileNotFoundError unless `path` itself, not what a symlink there names, is of
    `kind` (stat.S_ISDIR, stat.S_ISREG)."""
    if not kind(os.lstat(path).st_mode):
        raise FileNotFoundError(path.name)


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
        """The file, if it is a regular file inside the output and no part of its path below
        the job's folder is a symlink (which could name anything on the server)."""
        parts = path.split("/")
        if any(part in ("", ".", "..") for part in parts):
            raise FileNotFoundError(path)
        folder = self._output(job_id, output_dir)
        _is(folder, stat.S_ISDIR)
        for part in parts[:-1]:
            folder = folder / part
            _is(folder, stat.S_ISDIR)
        _is(folder / parts[-1], stat.S_ISREG)
        return folder / parts[-1]

    def local(
        self, job_id: str, output_dir: str, path: str, size: int
    ) -> tuple[Path, os.stat_result]:
        """The file as `check` finds it, with the lstat it checked: for a server that sends the
        file by its path, and takes its length from that stat, the recorded size."""
        file = self.file(job_id, output_dir, path)
        info = os.lstat(file)
        if info.st_size != size:
            raise Changed(path)
        return file, info

    def check(self, job_id: str, output_dir: str, path: str, size: int) -> None:
        self.local(job_id, output_dir, path, size)

    def read(
        self, job_id: str, output_dir: str, path: str, start: int, end: int
    ) -> Iterator[bytes]:
        fd = os.open(self.file(job_id, output_dir, path), os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            f.seek(start)
            left = end - start
            while left > 0 and (chunk := f.read(min(CHUNK, left))):
                left -= len(chunk)
                yield chunk

    def remove(self, job_id: str, output_dir: str | None = None) -> None:
        if output_dir is None:
            shutil.rmtree(self._job(job_id), ignore_errors=True)
            return
        shutil.rmtree(self._output(job_id, output_dir), ignore_errors=True)
        with contextlib.suppress(OSError):  # other outputs remain, or it is gone already
            self._job(job_id).rmdir()
