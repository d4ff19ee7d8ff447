"""Artifacts and uploads in an S3-compatible object store (AWS S3, MinIO, SeaweedFS, Ceph RGW),
so that workers and API processes need share no disk, only the database and the bucket.

Keys: `<prefix>/jobs/<job_id>/attempt-<n>/<path>` for an attempt's files, and
`<prefix>/uploads/<upload_id>/<name>` for the uploaded tokenizers and texts. An attempt's prefix
is its temporary key: the worker uploads into it before its fenced commit, and only that commit
(the Artifact rows are the manifest) makes anything list it. An attempt that does not commit
removes its prefix; what a killed worker left (objects, unfinished multipart uploads) goes at the
next attempt of its job or at a `sweep`.

boto3, because its managed transfers (`upload_fileobj` with a TransferConfig) run multipart
uploads with parallel, retried parts streamed from a file object, it presigns URLs, and it is the
client every S3-compatible store is tested against. Endpoint, region and credentials are its
own: AWS_ENDPOINT_URL (or AWS_ENDPOINT_URL_S3), AWS_DEFAULT_REGION, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, profiles in ~/.aws.

A file is read twice to publish it: hashed first, since S3 takes an object's metadata (its
sha256 here) only when its upload starts, then uploaded from the file with no other copy, hashed
again as the upload reads it, so that the recorded sha256 is of the bytes that were sent. The
engine has just written and evaluated the file, so the first read is mostly from the page cache.

A store that does not answer (no connection, a timeout, a reset, a 5xx or SlowDown once
botocore's own retries are spent) raises StoreUnavailable from every method: the worker puts
the job off and the API answers 503, where a refusal (a missing key or bucket) stays itself.

Limit: a hypernetwork training job's checkpoints (`scratch`) stay on the worker's own disk, so
a job whose worker died resumes from them only on that machine; on another it starts over.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import mimetypes
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as EndpointError

from .catalog import UPLOAD_ID
from .storage import (
    CHUNK,
    Changed,
    Known,
    Live,
    LocalStorage,
    Manifest,
    StoreUnavailable,
    causes,
    file_parts,
    job_name,
    output_name,
    sha256_file,
)

BATCH = 1000  # keys per DeleteObjects request, S3's maximum
MISSING = {"404", "NoSuchKey", "NotFound"}
BUSY = {"SlowDown", "ServiceUnavailable", "RequestTimeout"}  # codes that ask for a retry later
PROBE_SECONDS = 5.0  # readiness asks the store at most this often, however many probes come


class _Hashing:
    """A file object that hashes what is read from it. It has no seek, so s3transfer reads it
    once, front to back, and the digest is of exactly the bytes it sent."""

    def __init__(self, file: BinaryIO) -> None:
        self.file, self.sha256, self.size = file, hashlib.sha256(), 0

    def read(self, size: int = -1) -> bytes:
        data = self.file.read(size)
        self.sha256.update(data)
        self.size += len(data)
        return data


def _owner(root: str, key: str) -> tuple[str, str] | None:
    """(job id, output folder) of a key under `root` (`<prefix>/jobs/`), None if not a file's."""
    job_id, _, rest = key[len(root) :].partition("/")
    output_dir, _, path = rest.partition("/")
    return (job_id, output_dir) if path else None


def _away(e: BaseException) -> bool:
    """Whether botocore, or the socket under it, says the store is down, unreachable or
    overloaded anywhere in the chain of causes (a managed transfer's retries keep the last)."""
    for cause in causes(e):
        last = getattr(cause, "last_exception", None)
        if _down(cause) or (isinstance(last, BaseException) and _away(last)):
            return True
    return False


def _down(e: BaseException) -> bool:
    if isinstance(e, ClientError):
        error, meta = e.response.get("Error", {}), e.response.get("ResponseMetadata", {})
        return error.get("Code") in BUSY or meta.get("HTTPStatusCode", 0) >= 500
    return isinstance(e, EndpointError | HTTPClientError | ConnectionError | TimeoutError)


@contextlib.contextmanager
def _answering() -> Iterator[None]:
    """Botocore's word that the store is away, raised as the StoreUnavailable that the worker
    retries later and the API answers with a 503."""
    try:
        yield
    except Exception as e:
        if _away(e):
            raise StoreUnavailable(f"the object store did not answer: {e}") from e
        raise


def _batches(keys: Iterable[str]) -> Iterator[list[str]]:
    batch: list[str] = []
    for key in keys:
        batch.append(key)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


class S3Storage:
    def __init__(self, bucket: str, prefix: str, work: Path, part_bytes: int = 8 * 2**20) -> None:
        """`work`: this machine's folder for attempts being written and training scratch."""
        self.bucket, self.prefix, self.work = bucket, prefix, LocalStorage(work)
        self.transfer = TransferConfig(
            multipart_threshold=part_bytes, multipart_chunksize=part_bytes
        )
        # SigV4: boto3 presigns with SigV2 by default, which AWS deprecated and newer regions refuse
        # a session of its own reads the AWS environment now (boto3's default one caches it)
        session = boto3.session.Session()
        self.client = session.client("s3", config=Config(signature_version="s3v4"))
        # readiness: a client that does not retry and waits 2 s at most, to answer quickly
        quick = {"connect_timeout": 2, "read_timeout": 2, "retries": {"total_max_attempts": 1}}
        self.probe = session.client("s3", config=Config(signature_version="s3v4", **quick))
        self._probed = (-math.inf, False)  # (when, whether the store answered)

    # --- keys ---------------------------------------------------------------------------------
    def _key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def _jobs(self, job_id: str | None = None, output_dir: str | None = None) -> str:
        """The prefix (ending in /) of every job's files, one job's or one output's."""
        job = [job_name(job_id)] if job_id else []
        return self._key("jobs", *job, *([output_name(output_dir)] if output_dir else [])) + "/"

    def _file(self, job_id: str, output_dir: str, path: str) -> str:
        return self._jobs(job_id, output_dir) + "/".join(file_parts(path))

    def _uploads(self, upload_id: str) -> str:
        if not UPLOAD_ID.fullmatch(upload_id):
            raise ValueError(f"bad upload id {upload_id!r}")
        return self._key("uploads", upload_id) + "/"

    # --- listing and deleting -----------------------------------------------------------------
    def _objects(self, prefix: str) -> Iterator[dict]:
        pages = self.client.get_paginator("list_objects_v2")
        for page in pages.paginate(Bucket=self.bucket, Prefix=prefix):
            yield from page.get("Contents", [])

    def _unfinished(self, prefix: str) -> Iterator[dict]:
        """Multipart uploads begun and neither completed nor aborted."""
        pages = self.client.get_paginator("list_multipart_uploads")
        for page in pages.paginate(Bucket=self.bucket, Prefix=prefix):
            yield from page.get("Uploads", [])

    def _drop(self, keys: Iterable[str]) -> int:
        dropped = 0
        for batch in _batches(keys):
            doomed = {"Objects": [{"Key": k} for k in batch], "Quiet": True}
            failed = self.client.delete_objects(Bucket=self.bucket, Delete=doomed).get("Errors")
            if failed:  # a quiet DeleteObjects answers 200 and lists what it could not delete
                raise OSError(f"could not delete {failed[0]['Key']}: {failed[0].get('Message')}")
            dropped += len(batch)
        return dropped

    def _abort(self, uploads: Iterable[dict]) -> int:
        aborted = 0
        for u in uploads:
            with contextlib.suppress(self.client.exceptions.NoSuchUpload):  # ended meanwhile
                self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=u["Key"], UploadId=u["UploadId"]
                )
            aborted += 1
        return aborted

    def _delete(self, prefix: str) -> None:
        """Everything under `prefix`: unfinished uploads first, then the objects (an upload
        that completes in between is among them)."""
        self._abort(list(self._unfinished(prefix)))
        self._drop(o["Key"] for o in list(self._objects(prefix)))

    # --- artifacts ----------------------------------------------------------------------------
    @_answering()
    def workspace(self, job_id: str, attempt: int) -> Path:
        self._delete(self._jobs(job_id))
        return self.work.workspace(job_id, attempt)

    @_answering()
    def publish(self, job_id: str, folder: Path) -> tuple[str, Manifest]:
        """Upload every file under the attempt's prefix, then drop the local folder."""
        prefix = self._jobs(job_id, folder.name)
        manifest = []
        for file in sorted(p for p in folder.rglob("*") if p.is_file()):
            path = file.relative_to(folder).as_posix()
            manifest.append((path, *self._put(prefix + path, file)))
        self.work.remove(job_id, folder.name)
        return folder.name, manifest

    def _put(self, key: str, file: Path) -> tuple[int, str]:
        """One file, multipart above the part size, its sha256 in its metadata: (size, sha256).
        Changed if the bytes sent are not the ones hashed."""
        digest = sha256_file(file)
        media = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        extra = {"Metadata": {"sha256": digest}, "ContentType": media}  # as the API serves it
        with open(file, "rb") as f:
            sent = _Hashing(f)
            self.client.upload_fileobj(sent, self.bucket, key, extra, Config=self.transfer)
        if sent.sha256.hexdigest() != digest:
            raise Changed(f"{file.name} changed while it was uploaded")
        return sent.size, digest

    def scratch(self, job_id: str, name: str) -> Path:
        return self.work.scratch(job_id, name)

    @_answering()
    def check(self, job_id: str, output_dir: str, path: str, size: int) -> None:
        try:
            head = self.client.head_object(
                Bucket=self.bucket, Key=self._file(job_id, output_dir, path)
            )
        except ClientError as e:
            if e.response["Error"]["Code"] in MISSING:
                raise FileNotFoundError(path) from None
            raise
        if head["ContentLength"] != size:
            raise Changed(path)

    def read(
        self, job_id: str, output_dir: str, path: str, start: int, end: int
    ) -> Iterator[bytes]:
        if end <= start:  # an empty file: no Range can name its bytes
            return
        key, span = self._file(job_id, output_dir, path), f"bytes={start}-{end - 1}"
        with _answering():
            body = self.client.get_object(Bucket=self.bucket, Key=key, Range=span)["Body"]
            with contextlib.closing(body):
                yield from body.iter_chunks(CHUNK)

    @_answering()
    def remove(self, job_id: str, output_dir: str | None = None) -> None:
        self._delete(self._jobs(job_id, output_dir))
        self.work.remove(job_id, output_dir)

    @_answering()
    def sweep(self, is_live: Live, older_than: float) -> int:
        """Objects and unfinished uploads under `<prefix>/jobs/` by their age in the store
        (all their outputs asked about at once), then this machine's work folder."""
        root, cutoff = self._jobs(), datetime.now(UTC) - timedelta(seconds=older_than)
        uploads = [u for u in self._unfinished(root) if u["Initiated"] < cutoff]
        objects = [o for o in self._objects(root) if o["LastModified"] < cutoff]
        owners = {k: _owner(root, k) for k in (x["Key"] for x in uploads + objects)}
        live = is_live([o for o in dict.fromkeys(owners.values()) if o is not None])
        dead = {k for k, owner in owners.items() if owner is not None and owner not in live}
        removed = self._abort([u for u in uploads if u["Key"] in dead])
        removed += self._drop(o["Key"] for o in objects if o["Key"] in dead)
        return removed + self.work.sweep(is_live, older_than)

    @_answering()
    def sweep_uploads(self, known: Known, older_than: float) -> int:
        """Uploads under `<prefix>/uploads/` whose newest object is old enough and whose id
        has no row; keys that name no upload id are not ours and stay."""
        root, keys, newest = self._key("uploads") + "/", {}, {}
        for o in self._objects(root):
            upload_id = o["Key"][len(root) :].split("/", 1)[0]
            if UPLOAD_ID.fullmatch(upload_id):
                keys.setdefault(upload_id, []).append(o["Key"])
                newest[upload_id] = max(newest.get(upload_id, o["LastModified"]), o["LastModified"])
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than)
        old = [u for u, at in newest.items() if at < cutoff]
        doomed = set(old) - known(old)
        self._drop(k for u in doomed for k in keys[u])
        return len(doomed)

    def presign(self, job_id: str, output_dir: str, path: str, seconds: int) -> str:
        params = {"Bucket": self.bucket, "Key": self._file(job_id, output_dir, path)}
        return self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=seconds)

    # --- uploads ------------------------------------------------------------------------------
    @_answering()
    def put_upload(self, upload_id: str, files: dict[str, bytes]) -> None:
        for name, data in files.items():
            key = self._uploads(upload_id) + name
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data)

    @_answering()
    def fetch_upload(self, upload_id: str, folder: Path) -> None:
        """Downloaded into a temp folder renamed into place, so that no reader ever finds half
        an upload; a concurrent fetch that renamed first wins (the files are the same)."""
        objects = list(self._objects(self._uploads(upload_id)))
        if not objects:
            return
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{upload_id}.", suffix=".tmp", dir=folder.parent))
        try:
            for key in (o["Key"] for o in objects):
                self.client.download_file(self.bucket, key, str(tmp / key.rsplit("/")[-1]))
            tmp.rename(folder)
        except OSError:
            if not folder.is_dir():
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    @_answering()
    def remove_upload(self, upload_id: str) -> None:
        self._delete(self._uploads(upload_id))

    # --- readiness ----------------------------------------------------------------------------
    def reachable(self) -> bool:
        """Whether the bucket answered a HEAD, asked at most every PROBE_SECONDS. An answer
        that is an error (a missing bucket, a refused key) is an answer: only a store that is
        away is unreachable."""
        now = time.monotonic()
        if now - self._probed[0] >= PROBE_SECONDS:
            self._probed = (now, self._answers())
        return self._probed[1]

    def _answers(self) -> bool:
        try:
            self.probe.head_bucket(Bucket=self.bucket)
        except Exception as e:
            if _away(e):
                return False
        return True
