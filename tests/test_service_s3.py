"""Artifacts and uploads in an S3-compatible object store, against a real S3 server (SeaweedFS,
the `s3_endpoint` and `bucket` fixtures): S3Storage itself (publish, ranged reads, removal,
sweep, presigned URLs), then the API and the worker over it, on SQLite and PostgreSQL."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import tarfile
import time
import types
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest
from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from conftest import _free_ports
from fastapi.testclient import TestClient
from test_service_api import REQUEST, assert_problem, assert_ranges, run_next, submit

import service.s3
from hypernet.errors import InputError
from service import cli, worker
from service.api.main import create_app
from service.catalog import Catalog
from service.config import Settings
from service.embedded import environment
from service.models import JobStatus, utcnow
from service.s3 import S3Storage
from service.services import Services
from service.storage import Changed, LocalStorage, StoreUnavailable, open_storage

MiB = 2**20


def s3():  # noqa: ANN201 (a boto3 S3 client)
    """A client on the AWS environment as it is now (boto3's default session caches it)."""
    return boto3.session.Session().client("s3")


PREFIX = "tg"
JOB, OTHER = "a" * 32, "b" * 32


@pytest.fixture
def store(bucket: str, tmp_path: Path) -> S3Storage:
    """S3Storage on a fresh bucket, with the smallest part size S3 allows."""
    return S3Storage(bucket, PREFIX, tmp_path / "work", part_bytes=5 * MiB)


def keys(bucket: str, prefix: str = "") -> list[str]:
    found = s3().list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for o in found.get("Contents", []))


def body(bucket: str, key: str, span: str | None = None) -> bytes:
    extra = {"Range": span} if span else {}
    return s3().get_object(Bucket=bucket, Key=key, **extra)["Body"].read()


def unfinished(bucket: str) -> list[str]:
    return [u["Key"] for u in s3().list_multipart_uploads(Bucket=bucket).get(
        "Uploads", []
    )]  # fmt: skip


def write(folder: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def published(store: S3Storage, job_id: str, attempt: int, files: dict[str, bytes]) -> str:
    out = store.work.workspace(job_id, attempt)  # as `workspace`, without clearing the bucket
    return store.publish(job_id, write(out, files))[0]


BIG = os.urandom(12 * MiB + 7)  # three parts of 5 MiB at most
FILES = {"model.safetensors": BIG, "sub/config.json": b'{"a": 1}', "empty.txt": b""}


# --- S3Storage -------------------------------------------------------------------------------
def test_publish_streams_each_file_to_its_attempt_prefix_with_its_sha256(
    store: S3Storage, bucket: str
) -> None:
    out = write(store.workspace(JOB, 2), FILES)
    assert out.parent.parent == store.work.root  # a local folder, under the work folder
    output_dir, manifest = store.publish(JOB, out)
    assert output_dir == "attempt-2"
    expected = [(p, len(d), hashlib.sha256(d).hexdigest()) for p, d in sorted(FILES.items())]
    assert manifest == expected
    prefix = f"{PREFIX}/jobs/{JOB}/attempt-2/"
    assert keys(bucket) == sorted(prefix + p for p in FILES)
    for path, _, sha in manifest:
        head = s3().head_object(Bucket=bucket, Key=prefix + path)
        assert head["Metadata"]["sha256"] == sha
        assert hashlib.sha256(body(bucket, prefix + path)).hexdigest() == sha
    big = s3().head_object(Bucket=bucket, Key=prefix + "model.safetensors")
    assert big["ETag"].endswith('-3"')  # a multipart upload of three parts
    config = s3().head_object(Bucket=bucket, Key=prefix + "sub/config.json")
    assert config["ContentType"] == "application/json"  # as the API would serve it
    assert not out.exists() and not (store.work.root / JOB).exists()  # no local copy stays


def test_a_file_that_changes_while_it_is_uploaded_is_refused(
    store: S3Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = write(store.workspace(JOB, 1), {"model.safetensors": BIG})
    hashed = []

    def hash_then_change(path: Path) -> str:
        hashed.append(path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        path.write_bytes(b"changed" + BIG[7:])
        return digest

    monkeypatch.setattr("service.s3.sha256_file", hash_then_change)
    with pytest.raises(Changed, match="changed while it was uploaded"):
        store.publish(JOB, out)
    assert hashed == [out / "model.safetensors"]


def test_read_gives_byte_ranges_and_check_the_recorded_size(store: S3Storage) -> None:
    out = published(store, JOB, 1, FILES)
    read = b"".join(store.read(JOB, out, "model.safetensors", 0, len(BIG)))
    assert read == BIG
    for start, end in ((0, 1), (5 * MiB - 3, 5 * MiB + 3), (len(BIG) - 10, len(BIG))):
        assert b"".join(store.read(JOB, out, "model.safetensors", start, end)) == BIG[start:end]
    assert b"".join(store.read(JOB, out, "empty.txt", 0, 0)) == b""
    store.check(JOB, out, "sub/config.json", 8)
    with pytest.raises(Changed):
        store.check(JOB, out, "sub/config.json", 9)
    for missing in ("nope.txt", "sub/../sub/config.json", "../attempt-1/empty.txt"):
        with pytest.raises(FileNotFoundError):
            store.check(JOB, out, missing, 8)


def test_remove_takes_an_output_or_the_whole_job_and_its_unfinished_uploads(
    store: S3Storage, bucket: str
) -> None:
    first = published(store, JOB, 1, {"a.txt": b"one"})
    published(store, JOB, 2, {"a.txt": b"two"})
    published(store, OTHER, 1, {"a.txt": b"other"})
    client = s3()
    client.create_multipart_upload(Bucket=bucket, Key=f"{PREFIX}/jobs/{JOB}/attempt-3/big")
    store.remove(JOB, first)
    assert keys(bucket, f"{PREFIX}/jobs/{JOB}/") == [f"{PREFIX}/jobs/{JOB}/attempt-2/a.txt"]
    assert unfinished(bucket) == [f"{PREFIX}/jobs/{JOB}/attempt-3/big"]
    store.remove(JOB)
    assert keys(bucket) == [f"{PREFIX}/jobs/{OTHER}/attempt-1/a.txt"] and unfinished(bucket) == []
    store.remove(JOB)  # again: nothing left to remove


def test_a_new_attempt_clears_what_earlier_ones_left(store: S3Storage, bucket: str) -> None:
    published(store, JOB, 1, {"a.txt": b"one"})
    s3().create_multipart_upload(Bucket=bucket, Key=f"{PREFIX}/jobs/{JOB}/x/y")
    out = store.workspace(JOB, 2)
    assert keys(bucket) == [] and unfinished(bucket) == [] and not out.exists()


def test_sweep_removes_what_no_job_records_or_runs_once_old_enough(
    store: S3Storage, bucket: str
) -> None:
    live = {(JOB, "attempt-2")}
    published(store, JOB, 1, {"a.txt": b"dead attempt"})
    published(store, JOB, 2, {"a.txt": b"the recorded output"})
    published(store, OTHER, 1, {"a.txt": b"a deleted job's"})
    client = s3()
    for key in (f"jobs/{JOB}/attempt-2/late", f"jobs/{OTHER}/attempt-1/big"):
        client.create_multipart_upload(Bucket=bucket, Key=f"{PREFIX}/{key}")
    write(store.work.workspace(OTHER, 3), {"half.bin": b"a killed worker's local folder"})
    asked = []

    def is_live(outputs: list[tuple[str, str]]) -> set[tuple[str, str]]:
        asked.append(outputs)
        return live & set(outputs)

    assert store.sweep(is_live, older_than=3600) == 0  # all too young
    assert len(keys(bucket)) == 3 and len(unfinished(bucket)) == 2
    asked.clear()
    assert store.sweep(is_live, older_than=0) == 4  # 2 objects, 1 upload, 1 local folder
    assert keys(bucket) == [f"{PREFIX}/jobs/{JOB}/attempt-2/a.txt"]
    assert unfinished(bucket) == [f"{PREFIX}/jobs/{JOB}/attempt-2/late"]
    assert not (store.work.root / OTHER).exists()
    bucket_outputs = [(JOB, "attempt-1"), (JOB, "attempt-2"), (OTHER, "attempt-1")]
    assert sorted(asked[0]) == bucket_outputs  # all at once, each once
    assert asked[1:] == [[(OTHER, "attempt-3")]]  # then the local work folder


def test_the_local_store_sweeps_attempt_folders_the_same_way(tmp_path: Path) -> None:
    local = LocalStorage(tmp_path / "jobs")
    write(local.workspace(JOB, 2), {"a.txt": b"kept"})
    (local.root / JOB / ".attempt-1.x1y2.tmp").mkdir()  # a killed attempt's temp folder
    local.scratch(JOB, "train")
    write(local.workspace(OTHER, 1), {"a.txt": b"gone"})
    local.scratch(OTHER, "train")  # a scratch folder is asked about as an output of its own

    def is_live(outputs: list[tuple[str, str]]) -> set[tuple[str, str]]:
        return {(JOB, "attempt-2"), (JOB, "train")} & set(outputs)

    assert local.sweep(is_live, older_than=3600) == 0
    assert local.sweep(is_live, older_than=0) == 3
    assert sorted(p.name for p in (local.root / JOB).iterdir()) == ["attempt-2", "train"]
    assert not (local.root / OTHER).exists()


def test_sweep_uploads_removes_those_without_a_row_once_old_enough(
    store: S3Storage, bucket: str
) -> None:
    store.put_upload(JOB, {"tokenizer.json": b"{}", "tokenizer_config.json": b"{}"})
    store.put_upload(OTHER, {"text.txt": b"an upload whose row never committed"})
    s3().put_object(Bucket=bucket, Key=f"{PREFIX}/uploads/not-an-id/x", Body=b"not ours")
    asked = []

    def known(upload_ids: list[str]) -> set[str]:
        asked.append(sorted(upload_ids))
        return {JOB} & set(upload_ids)

    assert store.sweep_uploads(known, older_than=3600) == 0  # too young: no id asked about
    assert asked == [[]]
    assert store.sweep_uploads(known, older_than=0) == 1
    assert asked[-1] == [JOB, OTHER]  # one question for all of them
    assert keys(bucket) == sorted(
        [f"{PREFIX}/uploads/{JOB}/tokenizer.json", f"{PREFIX}/uploads/{JOB}/tokenizer_config.json",
         f"{PREFIX}/uploads/not-an-id/x"]
    )  # fmt: skip


def test_presigned_urls_serve_the_file_and_its_ranges(store: S3Storage) -> None:
    out = published(store, JOB, 1, FILES)
    url = store.presign(JOB, out, "model.safetensors", 60)
    assert "X-Amz-Signature=" in url  # SigV4
    assert httpx.get(url).content == BIG
    part = httpx.get(url, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == BIG[100:200]
    assert LocalStorage(Path("unused")).presign(JOB, out, "a", 60) is None


def test_storage_flags_reach_the_settings_and_a_bad_url_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    for url in ("s3://", "s3://Bad_Bucket/x", "ftp://host/x", "file://"):
        assert cli.main(["worker", "--storage", url, "--data-dir", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"storage {url!r}" in err, err
    for command in ("serve", "worker"):
        args = cli.parser().parse_args(
            [command, "--storage", "s3://b-1/p", "--storage-redirect", "--data-dir", str(tmp_path)]
        )
        given = cli._migrated(args)
        assert (given.storage, given.storage_redirect) == ("s3://b-1/p", True)
        passed = environment(given)  # to the embedded worker, and the API's processes
        assert (passed["TOKENGRAFT_STORAGE"], passed["TOKENGRAFT_STORAGE_REDIRECT"]) == (
            "s3://b-1/p",
            "True",
        )
    settings = Settings(data_dir=tmp_path, storage="s3://my-bucket//deep/prefix/")
    assert (open_storage(settings).bucket, open_storage(settings).prefix) == (
        "my-bucket",
        "deep/prefix",
    )


# --- the service over S3 ---------------------------------------------------------------------
@pytest.fixture
def s3_settings(settings: Settings, bucket: str) -> Settings:
    """The test settings with storage in the bucket, under the prefix "tg"."""
    return settings.model_copy(update={"storage": f"s3://{bucket}/{PREFIX}"})


@pytest.fixture
def s3_services(s3_settings: Settings) -> Iterator[Services]:
    """The service's objects on `s3_settings`, as a worker process holds them."""
    built = Services.build(s3_settings)
    yield built
    built.engine.dispose()


@pytest.fixture
def s3_client(s3_settings: Settings) -> Iterator[TestClient]:
    """The API in-process on `s3_settings` (jobs run with `run_next`)."""
    with TestClient(create_app(s3_settings)) as c:
        yield c


def test_artifacts_are_served_from_the_bucket(
    s3_client: TestClient, s3_services: Services, bucket: str
) -> None:
    client = s3_client
    job = submit(client)
    assert run_next(s3_services) == JobStatus.succeeded
    base = f"/jobs/{job['id']}/artifacts"
    files = client.get(base).json()["files"]
    prefix = f"{PREFIX}/jobs/{job['id']}/attempt-1/"
    assert sorted(prefix + f["path"] for f in files) == keys(bucket)  # nothing more, or less
    for f in files:
        data = body(bucket, prefix + f["path"])
        assert (len(data), hashlib.sha256(data).hexdigest()) == (f["size"], f["sha256"])
    assert not (s3_services.settings.data_dir / "work" / job["id"]).exists()
    entry = max(files, key=lambda f: f["size"])
    url, size, tag = f"{base}/{entry['path']}", entry["size"], f'"{entry["sha256"]}"'

    whole = client.get(url)
    assert whole.status_code == 200 and whole.headers["etag"] == tag
    assert whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["content-length"] == str(size)
    assert hashlib.sha256(whole.content).hexdigest() == entry["sha256"]
    part = client.get(url, headers={"Range": "bytes=100-1099"})
    assert part.status_code == 206 and part.headers["content-range"] == f"bytes 100-1099/{size}"
    assert part.content == body(bucket, prefix + entry["path"], "bytes=100-1099")
    assert_ranges(client, url, whole)
    head = client.head(url, headers={"Range": "bytes=10-19"})
    assert head.status_code == 206 and head.headers["content-range"] == f"bytes 10-19/{size}"
    assert head.headers["content-length"] == "10" and not head.content
    assert client.head(url).headers["content-length"] == str(size)
    cached = client.get(url, headers={"If-None-Match": tag})
    assert cached.status_code == 304 and cached.headers["etag"] == tag and not cached.content
    tar = client.get(f"/jobs/{job['id']}/checkpoint.tar")
    with tarfile.open(fileobj=io.BytesIO(tar.content)) as archive:
        got = {m.name: archive.extractfile(m).read() for m in archive.getmembers()}
    assert got[f"{job['id']}/{entry['path']}"] == whole.content

    s3().delete_object(Bucket=bucket, Key=prefix + entry["path"])
    assert_problem(client.get(url), 404)  # checked before any byte is sent
    assert client.delete(f"/jobs/{job['id']}").status_code == 204
    assert keys(bucket) == []


def test_storage_redirect_answers_307_to_a_presigned_url(settings: Settings, bucket: str) -> None:
    redirecting = settings.model_copy(
        update={"storage": f"s3://{bucket}/{PREFIX}", "storage_redirect": True}
    )
    services = Services.build(redirecting)
    try:
        with TestClient(create_app(redirecting)) as client:
            job = submit(client)
            run_next(services)
            files = client.get(f"/jobs/{job['id']}/artifacts").json()["files"]
            entry = max(files, key=lambda f: f["size"])
            url = f"/jobs/{job['id']}/artifacts/{entry['path']}"
            moved = client.get(url, follow_redirects=False)
            tag = f'"{entry["sha256"]}"'
            cached = client.get(url, headers={"If-None-Match": tag}, follow_redirects=False)
    finally:
        services.engine.dispose()
    assert moved.status_code == 307 and moved.headers["etag"] == tag
    assert cached.status_code == 304
    location = moved.headers["location"]
    assert location.startswith(os.environ["AWS_ENDPOINT_URL"]) and "X-Amz-Expires=900" in location
    data = httpx.get(location).content
    assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    part = httpx.get(location, headers={"Range": "bytes=3-12"})
    assert part.status_code == 206 and part.content == data[3:13]


def test_uploads_go_to_the_bucket_and_a_worker_without_them_fetches_them(
    s3_client: TestClient, s3_settings: Settings, bucket: str, tmp_path: Path
) -> None:
    client = s3_client
    tok = (s3_settings.tokenizers_dir / "sp" / "tokenizer.json").read_bytes()
    tok_id = client.post("/tokenizers", files={"file": ("t.json", tok)}).json()["id"]
    text_id = client.post("/texts", files={"file": ("e.txt", b"Der Fuchs.\n" * 20)}).json()["id"]
    assert keys(bucket, f"{PREFIX}/uploads/") == sorted(
        [f"{PREFIX}/uploads/{tok_id}/tokenizer.json", f"{PREFIX}/uploads/{text_id}/text.txt"]
    )
    assert body(bucket, f"{PREFIX}/uploads/{tok_id}/tokenizer.json") == tok

    # another machine: its own data dir, with the model store only; the database and bucket
    elsewhere = s3_settings.model_copy(update={"data_dir": tmp_path / "elsewhere"})
    (elsewhere.models_dir).parent.mkdir(parents=True)
    os.symlink(s3_settings.models_dir, elsewhere.models_dir)
    services = Services.build(elsewhere)
    try:
        job = submit(client, {**REQUEST, "tokenizer": tok_id, "eval_text": text_id})
        assert run_next(services) == JobStatus.succeeded
    finally:
        services.engine.dispose()
    assert (elsewhere.uploads_dir / tok_id / "tokenizer.json").read_bytes() == tok
    assert (elsewhere.uploads_dir / text_id / "text.txt").read_bytes() == b"Der Fuchs.\n" * 20
    assert sorted(p.name for p in elsewhere.uploads_dir.iterdir()) == sorted([tok_id, text_id])
    done = client.get(f"/jobs/{job['id']}").json()
    assert done["result"]["report"]["eval"]["text"] == text_id

    assert client.delete(f"/tokenizers/{tok_id}").status_code == 204
    assert keys(bucket, f"{PREFIX}/uploads/{tok_id}/") == []
    # the other machine's copy of the deleted upload goes with its next sweep; the text stays
    (elsewhere.uploads_dir / f".{text_id}.x1y2.tmp").mkdir()  # a fetch that never finished
    sweeper = Catalog(elsewhere)
    known = s3_client.app.state.services.queue.known_uploads
    assert sweeper.sweep_uploads(known, older_than=3600) == 0
    assert sweeper.sweep_uploads(known, older_than=0) == 2
    assert [p.name for p in elsewhere.uploads_dir.iterdir()] == [text_id]
    third = s3_settings.model_copy(update={"data_dir": tmp_path / "third"})
    fresh = Catalog(third, open_storage(third))
    assert fresh.text(text_id) == third.uploads_dir / text_id / "text.txt"
    with pytest.raises(InputError, match="not found"):
        fresh.tokenizer(tok_id)


def test_an_upload_whose_row_fails_leaves_nothing_in_the_bucket(
    s3_client: TestClient, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse() -> None:
        raise RuntimeError("database went away")

    services = s3_client.app.state.services
    put, kept = services.storage.put_upload, []

    def put_and_look(upload_id: str, files: dict[str, bytes]) -> None:
        put(upload_id, files)
        kept.extend(keys(bucket))

    monkeypatch.setattr(services.storage, "put_upload", put_and_look)
    monkeypatch.setattr(services, "sessions", types.SimpleNamespace(begin=refuse))
    with pytest.raises(RuntimeError, match="database went away"):
        s3_client.post("/texts", files={"file": ("e.txt", b"Der Fuchs.\n" * 20)})
    assert len(kept) == 1 and kept[0].endswith("/text.txt")  # it was there before the row
    assert keys(bucket) == [] and not any(services.settings.uploads_dir.iterdir())


def test_an_attempt_that_does_not_commit_leaves_nothing(
    s3_client: TestClient, s3_services: Services, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = submit(s3_client)
    monkeypatch.setattr(s3_services.queue, "succeed", lambda *a: False)  # fenced off
    assert run_next(s3_services) is None
    assert keys(bucket) == [] and unfinished(bucket) == []
    assert not (s3_services.settings.data_dir / "work" / job["id"]).exists()


def test_a_store_that_fails_fails_the_attempt_and_it_is_retried(
    settings: Settings, bucket: str
) -> None:
    missing = settings.model_copy(update={"storage": f"s3://{bucket}-missing/x"})
    services = Services.build(missing)
    try:
        job, _ = services.queue.enqueue(REQUEST, "0" * 64)
        assert run_next(services) == JobStatus.queued
        done = services.queue.get(job.id)
    finally:
        services.engine.dispose()
    assert done.error_type == "internal" and "NoSuchBucket" in done.error_detail


def test_the_worker_sweeps_with_the_database_as_judge(
    s3_client: TestClient, s3_services: Services, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue, store = s3_services.queue, s3_services.storage
    job = submit(s3_client)
    run_next(s3_services)
    asked = [(job["id"], "attempt-1"), (job["id"], "attempt-2"), (JOB, "attempt-1")]
    assert queue.live_outputs(asked) == {(job["id"], "attempt-1")}  # JOB: no such job
    running = submit(s3_client)["id"]
    claim = queue.claim("test-worker")
    assert claim is not None
    asked = [(running, "attempt-1"), (running, "attempt-2")]
    assert queue.live_outputs(asked) == {(running, "attempt-1")}
    published(store, job["id"], 2, {"a.txt": b"a lost commit's"})
    published(store, running, 1, {"a.txt": b"being written"})
    published(store, JOB, 1, {"a.txt": b"a deleted job's"})
    text = s3_client.post("/texts", files={"file": ("e.txt", b"Der Fuchs.\n")}).json()["id"]
    store.put_upload(OTHER, {"text.txt": b"an upload whose row never committed"})
    kept = keys(bucket, f"{PREFIX}/jobs/{job['id']}/attempt-1/")
    monkeypatch.setattr(worker, "SWEEP_GRACE", 0)
    w = worker.Worker(s3_services.settings, queue, store, s3_services.catalog)
    w.retain()
    upload = f"{PREFIX}/uploads/{text}/text.txt"
    assert keys(bucket) == sorted([*kept, f"{PREFIX}/jobs/{running}/attempt-1/a.txt", upload])


# --- a store that does not answer ------------------------------------------------------------
def go_away(monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the AWS environment at a loopback port where nothing listens, and tell botocore
    not to retry: the store is down for every client made from now on."""
    (port,) = _free_ports(1)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")


def _client_error(code: str, status: int) -> ClientError:
    response = {
        "Error": {"Code": code, "Message": code},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "HeadObject")


AWAY = {
    "endpoint": EndpointConnectionError(endpoint_url="http://127.0.0.1:9"),
    "connect-timeout": ConnectTimeoutError(endpoint_url="http://127.0.0.1:9"),
    "read-timeout": ReadTimeoutError(endpoint_url="http://127.0.0.1:9"),
    "closed": ConnectionClosedError(endpoint_url="http://127.0.0.1:9"),
    "reset": ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
    "slow-down": _client_error("SlowDown", 503),
    "unavailable": _client_error("ServiceUnavailable", 503),
    "internal": _client_error("InternalError", 500),
}


@pytest.mark.parametrize("error", AWAY.values(), ids=AWAY.keys())
def test_a_store_that_is_away_raises_store_unavailable(
    store: S3Storage, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(store.client, "head_object", fail)
    with pytest.raises(StoreUnavailable):
        store.check(JOB, "attempt-1", "a.txt", 1)
    monkeypatch.setattr(store.client, "upload_fileobj", fail)
    out = write(store.work.workspace(JOB, 1), {"a.txt": b"a"})
    with pytest.raises(StoreUnavailable):
        store.publish(JOB, out)


@pytest.mark.parametrize(("code", "status"), [("NoSuchBucket", 404), ("AccessDenied", 403)])
def test_a_store_that_answers_no_is_not_away(
    store: S3Storage, monkeypatch: pytest.MonkeyPatch, code: str, status: int
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise _client_error(code, status)

    monkeypatch.setattr(store.client, "head_object", refuse)
    with pytest.raises(ClientError):
        store.check(JOB, "attempt-1", "a.txt", 1)


def test_an_upload_whose_parts_the_store_refuses_for_now_is_store_unavailable(
    store: S3Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    def overloaded(*args: object, **kwargs: object) -> None:
        try:
            raise _client_error("SlowDown", 503)
        except ClientError as e:
            raise S3UploadFailedError(f"Failed to upload a.txt: {e}") from None

    monkeypatch.setattr(store.client, "upload_fileobj", overloaded)
    out = write(store.work.workspace(JOB, 1), {"a.txt": b"a"})
    with pytest.raises(StoreUnavailable):
        store.publish(JOB, out)


def test_reachable_asks_the_store_at_most_every_few_seconds(
    store: S3Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert store.reachable()
    go_away(monkeypatch)
    away = S3Storage(store.bucket, PREFIX, store.work.root)
    started = time.monotonic()
    assert not away.reachable()
    assert time.monotonic() - started < 5  # no retries, short timeouts
    monkeypatch.setattr(store.probe, "head_bucket", away.probe.head_bucket)
    assert store.reachable()  # asked a moment ago
    monkeypatch.setattr(service.s3, "PROBE_SECONDS", 0.0)
    assert not store.reachable()


def test_an_unreachable_store_answers_503_with_retry_after(
    s3_client: TestClient,
    s3_services: Services,
    s3_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job = submit(s3_client)
    assert run_next(s3_services) == JobStatus.succeeded
    files = s3_client.get(f"/jobs/{job['id']}/artifacts").json()["files"]
    url, tar = (
        f"/jobs/{job['id']}/artifacts/{files[0]['path']}",
        f"/jobs/{job['id']}/checkpoint.tar",
    )
    tokenizer = (s3_settings.tokenizers_dir / "sp" / "tokenizer.json").read_bytes()
    gone = submit(s3_client)
    assert run_next(s3_services) == JobStatus.succeeded
    s3_services.queue.register("w1", "host", 1, "cpu")
    go_away(monkeypatch)
    with TestClient(create_app(s3_settings)) as client:
        answers = [
            client.get(url),
            client.get(tar),
            client.post("/texts", files={"file": ("e.txt", b"Der Fuchs.\n")}),
            client.post("/tokenizers", files={"file": ("t.json", tokenizer)}),
        ]
        for response in answers:
            assert_problem(response, 503, "the object store does not answer")
            assert response.json()["type"] == "/problems/store-unavailable"
            assert response.headers["retry-after"] == "30"
            assert (
                "127.0.0.1" not in response.text and str(s3_settings.data_dir) not in response.text
            )
        head = client.head(url)
        assert head.status_code == 503 and head.headers["retry-after"] == "30"
        assert client.get("/texts").json()["uploads"] == []
        assert list(s3_settings.uploads_dir.iterdir()) == []  # nothing half-kept
        s3_services.queue.worker_beat("w1")
        assert_problem(client.get("/readyz"), 503, "object store unreachable")
        assert client.delete(f"/jobs/{gone['id']}").status_code == 204  # the files wait
        assert client.get(f"/jobs/{gone['id']}").status_code == 404
    s3_services.queue.worker_beat("w1")
    assert s3_client.get("/readyz").status_code == 200  # its clients reach the store still
    assert s3_client.get(url).status_code == 200


def test_a_job_whose_store_is_down_is_put_off_until_it_is_back(
    s3_settings: Settings, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real outage (nothing listens where the store was): the job is put off, its waits
    doubling and its attempts not used up, and runs once a worker reaches the store."""
    up = Services.build(s3_settings)
    go_away(monkeypatch)
    down = Services.build(s3_settings)
    now = utcnow()
    monkeypatch.setattr("service.queue.utcnow", lambda: now)
    try:
        job, _ = down.queue.enqueue(REQUEST, "0" * 64)
        waits = []
        for _ in range(down.settings.max_attempts + 1):
            assert run_next(down) == JobStatus.queued
            row = down.queue.get(job.id)
            waits.append((row.run_after - now).total_seconds())
            now = row.run_after
        assert waits == [5, 10, 20, 40]
        assert (row.error_type, row.attempt, row.deferrals) == ("store_unavailable", 4, 4)
        assert run_next(up) == JobStatus.succeeded
        assert up.queue.get(job.id).output_dir == "attempt-5"
        listed = up.storage.client.list_objects_v2(Bucket=bucket)["Contents"]
    finally:
        up.engine.dispose()
        down.engine.dispose()
    assert listed and all(o["Key"].startswith(f"{PREFIX}/jobs/{job.id}/attempt-5/") for o in listed)
