"""Artifact storage: a folder per job, written by the worker into an attempt folder that is
published once complete, and read back by the API in byte ranges.

`Storage` is the interface, `open_storage` picks an implementation from the settings:
`LocalStorage` keeps files on a (possibly shared) filesystem, `S3Storage` (service/s3.py) in an
S3-compatible object store. Either way an attempt writes into a local folder (`workspace`) and
`publish` makes it the job's output; nothing lists it until the worker's fenced commit records
its manifest, and `sweep` removes what no commit will ever list. The uploaded tokenizers and
texts live in the same store, so that a worker on another machine can fetch them.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import sqlite3
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from hypernet.errors import InputError

if TYPE_CHECKING:
    from .config import Settings

CHUNK = 1 << 20
Manifest = list[tuple[str, int, str]]  # (relative path, size, sha256) of each file
Output = tuple[str, str]  # (job id, output folder)
Live = Callable[[list[Output]], set[Output]]  # those outputs that a job records or runs
Known = Callable[[list[str]], set[str]]  # upload ids -> those that have a row
ATTEMPT = re.compile(r"\.?(attempt-[0-9]+)(?:\..*\.tmp)?")  # an output, or its temp folder
BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")  # S3's rule for bucket names
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
DISK_FULL = "53100"  # PostgreSQL's SQLSTATE for a full disk


class Changed(OSError):
    """A recorded file whose size on disk is no longer the one recorded."""


class StoreUnavailable(Exception):
    """The object store did not answer (down, unreachable, overloaded): worth trying again in
    a while. Not an OSError, so that no handler of a missing file takes it for one."""


def causes(e: BaseException) -> Iterator[BaseException]:
    """`e` and what it was raised from or while handling, once each (libraries wrap errors)."""
    seen: set[int] = set()
    cause: BaseException | None = e
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        yield cause
        cause = cause.__cause__ or cause.__context__


def out_of_space(e: BaseException) -> bool:
    """A full disk or quota anywhere in the chain of causes, the database's included."""
    return any(_full(c) for c in causes(e))


def _full(e: BaseException) -> bool:
    if isinstance(e, OSError):
        return e.errno in NO_SPACE
    if isinstance(e, sqlite3.Error):
        return getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    return getattr(e, "sqlstate", None) == DISK_FULL  # psycopg's errors carry their SQLSTATE


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def attempt_dir(attempt: int) -> str:
    """The output folder of a job's attempt (`workspace` writes it)."""
    return f"attempt-{attempt}"


def job_name(job_id: str) -> str:
    if not job_id.isalnum():
        raise ValueError(f"bad job id {job_id!r}")
    return job_id


def output_name(output_dir: str) -> str:
    if not output_dir.replace("-", "").isalnum():
        raise ValueError(f"bad output folder {output_dir!r}")
    return output_dir


def file_parts(path: str) -> list[str]:
    """A file's path inside an output, refused (FileNotFoundError) if any part could leave it."""
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise FileNotFoundError(path)
    return parts


class Storage(Protocol):
    def workspace(self, job_id: str, attempt: int) -> Path:
        """A local folder (must not exist yet) this attempt writes its checkpoint into and
        evaluates it from; earlier attempts' leftovers, complete or not, are removed first."""

    def publish(self, job_id: str, folder: Path) -> tuple[str, Manifest]:
        """Make the attempt's finished `folder` its output: the output's name and manifest.
        Nothing lists it until the worker's fenced commit records that manifest; an attempt
        that does not commit removes it, and `sweep` what a killed worker left."""

    def scratch(self, job_id: str, name: str) -> Path:
        """A local folder of the job's that outlives its attempts (created if absent), so that
        the next attempt can resume from what a dead worker checkpointed there; `sweep` removes
        it once the job is over, where its worker did not."""

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

    def sweep(self, is_live: Live, older_than: float) -> int:
        """Remove the attempts' outputs, whole or partial, older than `older_than` seconds
        that `is_live` disowns (a killed worker's, a lost commit's, a deleted job's), asking
        it about all of them at once: how many folders, objects and unfinished uploads went."""

    def sweep_uploads(self, known: Known, older_than: float) -> int:
        """Remove the uploads in the store, older than `older_than` seconds, that `known`
        disowns (an API stopped between keeping the files and committing the row): how many
        uploads went."""

    def presign(self, job_id: str, output_dir: str, path: str, seconds: int) -> str | None:
        """A URL that serves the file without credentials for `seconds`; None where the
        store cannot make one."""

    def put_upload(self, upload_id: str, files: dict[str, bytes]) -> None:
        """Keep an upload's files (name -> bytes) where every machine finds them."""

    def fetch_upload(self, upload_id: str, folder: Path) -> None:
        """Write the upload's files into `folder` (absent), if the store holds them."""

    def remove_upload(self, upload_id: str) -> None:
        """The upload's files in the store, if any."""

    def reachable(self) -> bool:
        """Whether the store answers now, asked cheaply enough for every readiness probe."""


def open_storage(settings: Settings) -> Storage:
    """The store `settings.storage` names: file://DIR (the default: the data dir's jobs folder)
    or s3://bucket/prefix, whose endpoint, region and credentials boto3 finds itself (AWS_*
    variables, ~/.aws). InputError for anything else."""
    url = settings.storage or f"file://{settings.jobs_dir}"
    scheme, sep, rest = url.partition("://")
    bucket, _, prefix = rest.partition("/")
    if sep and scheme == "file" and rest:
        return LocalStorage(Path(rest).absolute())
    if sep and scheme == "s3" and BUCKET.fullmatch(bucket):
        from .s3 import S3Storage  # boto3 is imported where it is used only

        work = settings.data_dir / "work"
        return S3Storage(bucket, prefix.strip("/"), work, settings.s3_part_bytes)
    raise InputError(f"storage {url!r} is neither file://DIR nor s3://BUCKET/PREFIX")


def _is(path: Path, kind: Callable[[int], bool]) -> None:
    """Raise FileNotFoundError unless `path` itself, not what a symlink there names, is of
    `kind` (stat.S_ISDIR, stat.S_ISREG)."""
    if not kind(os.lstat(path).st_mode):
        raise FileNotFoundError(path.name)


def _folders(root: Path) -> list[Path]:
    """The folders directly in `root` (none if it is absent, or went while being listed)."""
    try:
        return [p for p in root.iterdir() if p.is_dir()]
    except FileNotFoundError:
        return []


class LocalStorage:
    """Outputs are folders `<root>/<job_id>/attempt-<n>`; uploads stay in the data dir's
    uploads folder, the store of every process that shares this filesystem."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _job(self, job_id: str) -> Path:
        return self.root / job_name(job_id)

    def _output(self, job_id: str, output_dir: str) -> Path:
        return self._job(job_id) / output_name(output_dir)

    def workspace(self, job_id: str, attempt: int) -> Path:
        folder = self._job(job_id)
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        return folder / attempt_dir(attempt)

    def publish(self, job_id: str, folder: Path) -> tuple[str, Manifest]:
        """The folder is in place already: its name and manifest."""
        return folder.name, self.manifest(job_id, folder.name)

    def scratch(self, job_id: str, name: str) -> Path:
        folder = self._output(job_id, name)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def manifest(self, job_id: str, output_dir: str) -> Manifest:
        out = self._output(job_id, output_dir)
        files = sorted(p for p in out.rglob("*") if p.is_file())
        return [(p.relative_to(out).as_posix(), p.stat().st_size, sha256_file(p)) for p in files]

    def file(self, job_id: str, output_dir: str, path: str) -> Path:
        """The file, if it is a regular file inside the output and no part of its path below
        the job's folder is a symlink (which could name anything on the server)."""
        parts = file_parts(path)
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

    def sweep(self, is_live: Live, older_than: float) -> int:
        """Attempt folders (and the temp folders of unfinished ones) and scratch folders by
        their age on disk, a scratch folder as an output of its own name (`is_live` keeps it
        while its job may run again); a job's folder goes once empty."""
        cutoff = time.time() - older_than
        jobs = {job: older(job, cutoff) for job in _folders(self.root)}  # before removing inside
        found = {
            entry: (job.name, _output(entry.name))
            for job in jobs
            for entry in _folders(job)
            if older(entry, cutoff)
        }
        live = is_live(list(dict.fromkeys(found.values())))
        doomed = [entry for entry, output in found.items() if output not in live]
        for entry in doomed:
            shutil.rmtree(entry, ignore_errors=True)
        for job in (job for job, old in jobs.items() if old):
            with contextlib.suppress(OSError):  # not empty: outputs or scratch remain
                job.rmdir()
        return len(doomed)

    def sweep_uploads(self, known: Known, older_than: float) -> int:
        """Nothing: this store's uploads are the uploads folder, which `Catalog` sweeps."""
        return 0

    def presign(self, job_id: str, output_dir: str, path: str, seconds: int) -> None:
        """None: the API sends local files itself."""

    def put_upload(self, upload_id: str, files: dict[str, bytes]) -> None:
        """Nothing: the uploads folder that `uploads.save` wrote is this store's."""

    def fetch_upload(self, upload_id: str, folder: Path) -> None:
        """Nothing: an upload that is not in the uploads folder does not exist."""

    def remove_upload(self, upload_id: str) -> None:
        """Nothing: `uploads.remove` removes the folder."""

    def reachable(self) -> bool:
        """True: a folder is there while its filesystem is (whose free space `/readyz` checks)."""
        return True


def _output(name: str) -> str:
    """The output a folder in a job's folder is part of: an attempt (the temp folder of one
    too), else the scratch folder of that name."""
    match = ATTEMPT.fullmatch(name)
    return match[1] if match else name


def older(path: Path, cutoff: float) -> bool:
    """Whether `path` was last modified before `cutoff` (a time.time()); False once gone."""
    try:
        return path.lstat().st_mtime < cutoff
    except FileNotFoundError:
        return False
